-- Pre-experiment covariates of an exposure (README, "Variance reduction with covariates"): up
-- to 5 numbers, in the order the experiment declares them (metrics.covariates; a declared
-- covariate keeps its position for good: the list only grows). A unit's covariates are its
-- first exposure's. NULL when the exposure sent none (most): a null costs the ingest COPY
-- nothing, and adding a nullable column without a default rewrites nothing.
ALTER TABLE exposures ADD COLUMN covariates double precision[];

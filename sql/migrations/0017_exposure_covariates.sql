-- Pre-experiment covariates of an exposure (README, "Variance reduction with covariates"): up
-- to 5 numbers, in the order the experiment declares them (metrics.covariates; a declared
-- covariate keeps its position for good: the list only grows). A unit's covariates are its
-- first exposure's. NULL when the exposure sent none (most): a null costs the ingest COPY
-- nothing, and adding a nullable column without a default rewrites nothing.
-- Five columns rather than one array (MAX_COVARIATES in litmus/core/unitfold.py): a float8 costs
-- the COPY next to nothing where an array's encoding and parsing doubled the CPU of each row
-- that carries one (docs/PERFORMANCE.md, "Covariates").
ALTER TABLE exposures
    ADD COLUMN covariate_1 double precision,
    ADD COLUMN covariate_2 double precision,
    ADD COLUMN covariate_3 double precision,
    ADD COLUMN covariate_4 double precision,
    ADD COLUMN covariate_5 double precision;

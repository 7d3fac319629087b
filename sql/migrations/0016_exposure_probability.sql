-- The probability behind each exposure (README, "What if: counterfactual estimates"): the
-- probability with which the served variant was chosen, as the assign answer gave it.
--   > 0   sent by the client, or by the assign route's log_exposure (the answer's own);
--   < 0   its negative: the client sent none, so the server filled in the served variant's
--         weight in the configuration current when the exposure arrived (counted apart);
--   NULL  not known (exposures stored before this migration): left out of the estimates.
-- One column, not a value and a flag: the ingest COPY pays for every column of every row.
-- Adding a nullable column without a default rewrites nothing.
ALTER TABLE exposures ADD COLUMN probability double precision;

-- Segment attributes of an exposure (README, "Segments"): up to 5 string keys, e.g.
-- {"country": "DE", "device": "ios"}. A unit's attributes are its first exposure's. NULL when
-- the exposure sent none (most): a null costs the ingest COPY nothing, and adding a nullable
-- column without a default rewrites nothing. Segment breakdowns read this column on request
-- (exploratory analysis); the recompute's fold never does.
-- Stored as the JSON text the server checked and wrote, not jsonb: the ingest path skips
-- PostgreSQL's jsonb parse, and the breakdown, which reads the column rarely, casts it.
ALTER TABLE exposures ADD COLUMN attributes text;

-- 0010 renamed the per-unit tables to *_v1 so that a leader of the version before it would stop
-- folding; the leader that followed took its state from them and dropped them. That takeover is
-- gone (docs/OPERATIONS.md, "Upgrades and migrations"): drop whatever is left, empty on a
-- database that 0010 created, already gone on one whose leader took the state over.
DROP TABLE IF EXISTS unit_exposures_v1;
DROP TABLE IF EXISTS unit_metrics_v1;

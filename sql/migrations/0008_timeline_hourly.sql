-- The exposures timeline has at most 60 points, but reading it from 10-second slots meant
-- reading every slot of the experiment's life: a month-old experiment read ~260 k slots per
-- variant at every recompute, a cost that grew with its age, not with what arrived (review
-- finding 12). The fold now keeps hourly slots as well; a timeline whose points are an hour
-- or more apart (experiments older than 60 hours) is read from them: at most 24 x 365 slots
-- per variant a year.
-- Same columns, defaults and primary key (experiment_id, slot, variant) as exposure_timeline.
CREATE TABLE exposure_timeline_hourly (LIKE exposure_timeline INCLUDING ALL);

INSERT INTO exposure_timeline_hourly (experiment_id, slot, variant, units)
SELECT experiment_id, date_bin('1 hour', slot, timestamptz '2000-01-01'), variant, sum(units)
FROM exposure_timeline GROUP BY 1, 2, 3;

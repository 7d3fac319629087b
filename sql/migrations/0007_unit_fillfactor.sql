-- The recompute fold updates per-unit totals in place, every few seconds, for every unit that
-- got new events. With full pages each update wrote its new row version to another page and a
-- new entry into the primary key (and, after each checkpoint, a full-page image of both).
-- fillfactor 80 leaves room on each page, so an update stays on its page (a HOT update: no
-- new index entry, no page split). It applies to pages written from now on.
ALTER TABLE unit_exposures SET (fillfactor = 80);
ALTER TABLE unit_metrics SET (fillfactor = 80);

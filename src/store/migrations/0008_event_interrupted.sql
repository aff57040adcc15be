-- Events a killed process left open: when they were last known to be going on, and a
-- mark for those closed at the next start rather than by the end of their motion.
ALTER TABLE events ADD COLUMN updated_us INTEGER;
ALTER TABLE events ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;

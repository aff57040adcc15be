-- v4: events: a period of motion on one camera and what X-CLIP made of it.
CREATE TABLE events (
    id                 INTEGER PRIMARY KEY,
    camera             TEXT    NOT NULL,
    start_us           INTEGER NOT NULL,       -- wall clock, microseconds since the epoch
    end_us             INTEGER,                -- NULL while the motion lasts
    action             TEXT,                   -- best prompt of the most serious clip
    category           TEXT,
    risk               TEXT CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    confidence         REAL,
    clips              INTEGER NOT NULL DEFAULT 0,
    household          TEXT,                   -- JSON of a household match, when one was made
    model              TEXT,
    model_placeholder  INTEGER NOT NULL DEFAULT 0 CHECK (model_placeholder IN (0, 1)),
    created_at         INTEGER NOT NULL
);
CREATE INDEX events_camera_start ON events(camera, start_us);
CREATE INDEX events_start ON events(start_us);

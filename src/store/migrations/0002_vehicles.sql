-- v2: registered vehicles, matched by licence plate or by a visual embedding.
CREATE TABLE vehicles (
    id            INTEGER PRIMARY KEY,
    description   TEXT    NOT NULL DEFAULT '',
    plate         TEXT,                      -- as entered
    plate_norm    TEXT,                      -- uppercase, separators removed
    vehicle_type  TEXT,
    color         TEXT,
    trusted       INTEGER NOT NULL DEFAULT 1 CHECK (trusted IN (0, 1)),
    member_id     INTEGER REFERENCES members(id) ON DELETE SET NULL,
    model_id      TEXT,
    dim           INTEGER,
    embedding     BLOB,                      -- dim x f32, little-endian
    created_at    INTEGER NOT NULL,
    CHECK ((embedding IS NULL) = (model_id IS NULL)),
    CHECK (plate_norm IS NOT NULL OR embedding IS NOT NULL)
);
CREATE INDEX vehicles_plate_norm ON vehicles(plate_norm);

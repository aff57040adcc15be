-- v1: household members, their schedules and person embeddings.
CREATE TABLE members (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role        TEXT    NOT NULL CHECK (role IN ('resident', 'family', 'service_worker', 'frequent_visitor')),
    notes       TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL            -- unix seconds
);

-- When a member is expected: `days` is a bitmask (Monday = 1 ... Sunday = 64) of the days
-- a window starts on; minutes since local midnight; end < start wraps past midnight.
CREATE TABLE member_schedules (
    id          INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    days        INTEGER NOT NULL CHECK (days BETWEEN 1 AND 127),
    start_min   INTEGER NOT NULL CHECK (start_min BETWEEN 0 AND 1439),
    end_min     INTEGER NOT NULL CHECK (end_min BETWEEN 0 AND 1439 AND end_min <> start_min)
);
CREATE INDEX member_schedules_member ON member_schedules(member_id);

-- One row per enrolled embedding. `model_id` names the embedding model (its sha256 for
-- real models): rows of another model or dimension are never compared.
CREATE TABLE person_embeddings (
    id          INTEGER PRIMARY KEY,
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    model_id    TEXT    NOT NULL CHECK (length(model_id) > 0),
    dim         INTEGER NOT NULL CHECK (dim > 0),
    vector      BLOB    NOT NULL,            -- dim x f32, little-endian
    source      TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX person_embeddings_member ON person_embeddings(member_id);
CREATE INDEX person_embeddings_model ON person_embeddings(model_id, dim);

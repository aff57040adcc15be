-- v3: cache of X-CLIP prompt text embeddings, keyed by the text graph's sha256, so a
-- restart does not recompute them (tens of seconds for a full-size model on a small board).
CREATE TABLE text_embedding_cache (
    model_sha256  TEXT    NOT NULL,
    prompt        TEXT    NOT NULL,
    dim           INTEGER NOT NULL CHECK (dim > 0),
    vector        BLOB    NOT NULL,            -- dim x f32, little-endian
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (model_sha256, prompt)
);

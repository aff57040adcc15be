-- v7: negative enrolment. A negative embedding is of someone who must never be taken for
-- member_id (a look-alike neighbour, a sibling): a probe at least as close to one of a
-- member's negatives as to the member is not named as them.
ALTER TABLE person_embeddings ADD COLUMN negative INTEGER NOT NULL DEFAULT 0
    CHECK (negative IN (0, 1));

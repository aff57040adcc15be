-- v6: household identity lowers an event's risk. `risk` stays what the event is ranked by
-- (after lowering); `model_risk` is what X-CLIP said; `risk_note` says why they differ.
ALTER TABLE events ADD COLUMN model_risk TEXT
    CHECK (model_risk IN ('low', 'medium', 'high', 'critical'));
ALTER TABLE events ADD COLUMN risk_note TEXT;
UPDATE events SET model_risk = risk;

-- What MQTT has yet to publish of the events table (an outbox). Triggers write it in the
-- same transaction as the event's change, so nothing committed can be missed, whatever
-- the broker's state; the publisher removes a row once the broker acknowledged it (QoS 1).
-- One pending row per event and kind (later updates of an event coalesce into the
-- pending one); rows go with their event (retention bounds the table).
CREATE TABLE mqtt_outbox (
    -- AUTOINCREMENT: never reused once the table empties, so "after the last sent" holds.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('new', 'update', 'end')),
    UNIQUE (event_id, kind)
);
CREATE TRIGGER mqtt_outbox_new AFTER INSERT ON events BEGIN
    INSERT OR IGNORE INTO mqtt_outbox (event_id, kind) VALUES (NEW.id, 'new');
END;
CREATE TRIGGER mqtt_outbox_end AFTER UPDATE OF end_us ON events
    WHEN OLD.end_us IS NULL AND NEW.end_us IS NOT NULL BEGIN
    INSERT OR IGNORE INTO mqtt_outbox (event_id, kind) VALUES (NEW.id, 'end');
END;
CREATE TRIGGER mqtt_outbox_update AFTER UPDATE OF action, risk, household ON events
    WHEN NEW.end_us IS NULL BEGIN
    INSERT OR IGNORE INTO mqtt_outbox (event_id, kind) VALUES (NEW.id, 'update');
END;

-- Each event's best frame (the JPEG as captured, no re-encode), stored when motion
-- confirms the event and replaced while it goes on by a frame with more of the picture
-- moving. In the row, so retention and a full disk drop it with its event.
ALTER TABLE events ADD COLUMN snapshot BLOB;
ALTER TABLE events ADD COLUMN snapshot_score REAL;

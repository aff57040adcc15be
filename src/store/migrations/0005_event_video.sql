-- v5: the video file of an event (see src/recording.rs), under <data_dir>/clips/.
ALTER TABLE events ADD COLUMN video TEXT;          -- file name, without directory
-- recording: being written (.part on disk) | complete | interrupted (the process died
-- while writing; the .part was removed) | deleted (disk budget) | failed
ALTER TABLE events ADD COLUMN video_state TEXT
    CHECK (video_state IN ('recording', 'complete', 'interrupted', 'deleted', 'failed'));
ALTER TABLE events ADD COLUMN video_frames INTEGER;
ALTER TABLE events ADD COLUMN video_bytes INTEGER;
ALTER TABLE events ADD COLUMN video_error TEXT;
CREATE INDEX events_video ON events(video);

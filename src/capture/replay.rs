//! Replay camera: recorded JPEGs played back as a live camera, looping, at the configured
//! rate. Used to re-run a field recording through the pipeline and in tests.
//!
//! The path is either a directory of `.jpg`/`.jpeg` files (played in name order) or one
//! MJPEG file of concatenated JPEGs. A file that cannot be read or is not a whole JPEG is
//! reported as a bad frame (counted by the capture loop) and playback carries on.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::jpeg::{read_jpeg, validate_jpeg, JpegError};
use super::{Captured, FrameSource, Pacer, SourceError, SourceInfo};
use crate::clock::Clock;
use crate::config::CameraConfig;
use crate::ring::{FrameFormat, FrameMeta};

/// Largest frame accepted from a recording; anything bigger is a corrupt stream.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Cap on a directory listing, so a mistaken path (`/`) cannot eat the memory budget.
const MAX_FILES: usize = 100_000;

enum Input {
    Dir {
        files: Vec<PathBuf>,
        next: usize,
    },
    Mjpeg {
        path: PathBuf,
        reader: BufReader<File>,
    },
}

pub struct ReplaySource {
    info: SourceInfo,
    input: Input,
    pacer: Pacer,
    clock: Arc<dyn Clock>,
    seq: u64,
}

impl ReplaySource {
    pub fn open(
        cam: &CameraConfig,
        clock: Arc<dyn Clock>,
        paced: bool,
    ) -> Result<Self, SourceError> {
        let path = cam
            .path
            .as_deref()
            .ok_or_else(|| SourceError::Unavailable("replay camera without a path".into()))?;
        let meta = std::fs::metadata(path)
            .map_err(|e| SourceError::from_io(&path.display().to_string(), &e))?;
        let input = if meta.is_dir() {
            let files = list_jpegs(path)?;
            if files.is_empty() {
                return Err(SourceError::Unavailable(format!(
                    "{}: no .jpg or .jpeg files",
                    path.display()
                )));
            }
            Input::Dir { files, next: 0 }
        } else {
            // A FIFO or device under the name would block or never end: refused here.
            let (f, _) = crate::fsio::open_regular(path, u64::MAX)
                .map_err(|e| SourceError::Unavailable(e.to_string()))?;
            Input::Mjpeg {
                path: path.to_path_buf(),
                reader: BufReader::with_capacity(1 << 16, f),
            }
        };
        Ok(Self {
            info: SourceInfo {
                driver: "replay".into(),
                format: FrameFormat::Jpeg,
                width: cam.width,
                height: cam.height,
                fps: cam.fps,
                detail: path.display().to_string(),
            },
            input,
            pacer: Pacer::new(cam.fps, paced),
            clock,
            seq: 0,
        })
    }

    /// Read the next frame into `buf` and return its size from the JPEG header.
    fn read_next(&mut self, buf: &mut Vec<u8>) -> Result<(u32, u32), SourceError> {
        match &mut self.input {
            Input::Dir { files, next } => {
                let path = &files[*next];
                *next = (*next + 1) % files.len();
                // Only regular files, never more than a frame's worth of bytes, and an open
                // that cannot block on a FIFO named *.jpg.
                crate::fsio::read_regular_into(path, MAX_FRAME_BYTES as u64, buf)
                    .map_err(|e| SourceError::BadFrame(e.to_string()))?;
                validate_jpeg(buf)
                    .map_err(|e| SourceError::BadFrame(format!("{}: {e}", path.display())))
            }
            Input::Mjpeg { path, reader } => {
                let mut rewound = false;
                loop {
                    match read_jpeg(reader, buf, MAX_FRAME_BYTES) {
                        Ok(Some(_)) => {
                            return validate_jpeg(buf).map_err(|e| {
                                SourceError::BadFrame(format!("{}: {e}", path.display()))
                            })
                        }
                        Ok(None) | Err(JpegError::Truncated) if !rewound => {
                            // End of the recording: loop. A truncated last frame is
                            // simply the end of a recording cut short.
                            reader.seek(SeekFrom::Start(0)).map_err(|e| {
                                SourceError::from_io(&path.display().to_string(), &e)
                            })?;
                            rewound = true;
                        }
                        Ok(None) | Err(JpegError::Truncated) => {
                            return Err(SourceError::Unavailable(format!(
                                "{}: no complete JPEG in the file",
                                path.display()
                            )))
                        }
                        Err(JpegError::Io(e)) => {
                            return Err(SourceError::from_io(&path.display().to_string(), &e))
                        }
                        Err(e) => {
                            return Err(SourceError::BadFrame(format!("{}: {e}", path.display())))
                        }
                    }
                }
            }
        }
    }
}

fn list_jpegs(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| SourceError::from_io(&dir.display().to_string(), &e))?;
    let mut files = Vec::new();
    for entry in rd.flatten() {
        let p = entry.path();
        let is_jpeg = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
        if is_jpeg {
            if files.len() == MAX_FILES {
                return Err(SourceError::Unavailable(format!(
                    "{}: more than {MAX_FILES} JPEG files",
                    dir.display()
                )));
            }
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

impl FrameSource for ReplaySource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError> {
        let (ts_us, skipped) = self.pacer.wait(&*self.clock);
        let (width, height) = self.read_next(buf)?;
        let seq = self.seq;
        self.seq += 1;
        Ok(Captured {
            meta: FrameMeta {
                seq,
                ts_us,
                width,
                height,
                format: FrameFormat::Jpeg,
            },
            dropped_before: skipped,
        })
    }
}

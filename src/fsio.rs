//! Reading files named by a user (config, replay frames, embeddings, photos) with bounds:
//! only regular files, never more than a stated size, and an `open()` that cannot block.
//!
//! Why: a path that is a FIFO blocks `open()` until a writer appears (a capture thread
//! would hang there and SIGINT with it); `/dev/zero` or a symlink to it is read until the
//! allocation fails; a 2 GB file is read whole before anything looks at it. Here the
//! file is opened with `O_NONBLOCK` (a FIFO opens at once), checked with `fstat` on the
//! open descriptor (no race with a rename), and read through a `take` of the cap plus one
//! byte, so a file that grows while it is read is still refused.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::ImageDecoder;

/// Largest config file read (the embedded default is ~10 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest photo or JPEG frame given on the command line or by upload.
pub const MAX_IMAGE_BYTES: u64 = 32 << 20;
/// Most pixels a photo or frame given on the command line may claim in its header
/// (a 48 MP phone photo fits; a 65500x65500 header does not), checked before decoding.
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a regular file ({kind}); only regular files are read")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {len} bytes is over the {max}-byte limit for this input")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: image of {width}x{height} is over the {max}-pixel limit")]
    TooManyPixels {
        path: PathBuf,
        width: u32,
        height: u32,
        max: u64,
    },
    #[error("{path}: not a readable image (JPEG or PNG): {message}")]
    NotImage { path: PathBuf, message: String },
}

fn file_kind(ft: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType as T;
    match ft {
        T::Directory => "a directory",
        T::Fifo => "a FIFO",
        T::CharacterDevice => "a character device",
        T::BlockDevice => "a block device",
        T::Socket => "a socket",
        T::Symlink => "a symlink",
        _ => "not a plain file",
    }
}

/// Open `path` for reading if it is a regular file of at most `max` bytes; returns the
/// file and its size. Never blocks on a FIFO.
pub fn open_regular(path: &Path, max: u64) -> Result<(File, u64), ReadError> {
    use rustix::fs::{Mode, OFlags};
    let io = |source: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ft != rustix::fs::FileType::RegularFile {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(ft),
        });
    }
    let len = st.st_size.max(0) as u64;
    if len > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            len,
            max,
        });
    }
    Ok((File::from(fd), len))
}

/// Read a regular file of at most `max` bytes into `buf` (cleared first).
pub fn read_regular_into(path: &Path, max: u64, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let (f, len) = open_regular(path, max)?;
    buf.clear();
    buf.reserve(len as usize);
    f.take(max.saturating_add(1))
        .read_to_end(buf)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            max,
        });
    }
    Ok(())
}

/// Read a regular file of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    read_regular_into(path, max, &mut buf)?;
    Ok(buf)
}

/// Read a regular UTF-8 text file of at most `max` bytes.
pub fn read_regular_string(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_regular(path, max)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Width and height an image's header claims, refused past [`MAX_IMAGE_PIXELS`] before
/// anything is decoded. `path` only names the input in errors.
pub fn image_size_checked(path: &Path, bytes: &[u8]) -> Result<(u32, u32), ReadError> {
    let not_image = |message: String| ReadError::NotImage {
        path: path.to_path_buf(),
        message,
    };
    let cursor = std::io::Cursor::new(bytes);
    let (width, height) = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => image::codecs::jpeg::JpegDecoder::new(cursor)
            .map_err(|e| not_image(e.to_string()))?
            .dimensions(),
        Ok(image::ImageFormat::Png) => image::codecs::png::PngDecoder::new(cursor)
            .map_err(|e| not_image(e.to_string()))?
            .dimensions(),
        Ok(f) => return Err(not_image(format!("{f:?}"))),
        Err(e) => return Err(not_image(e.to_string())),
    };
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(ReadError::TooManyPixels {
            path: path.to_path_buf(),
            width,
            height,
            max: MAX_IMAGE_PIXELS,
        });
    }
    Ok((width, height))
}

/// Read a JPEG or PNG photo named on the command line: a regular file of at most
/// [`MAX_IMAGE_BYTES`] whose header claims at most [`MAX_IMAGE_PIXELS`], then decoded.
pub fn read_image(path: &Path) -> Result<image::DynamicImage, ReadError> {
    decode_image(path, &read_regular(path, MAX_IMAGE_BYTES)?)
}

/// Decode a JPEG or PNG already in memory (an upload) whose header claims at most
/// [`MAX_IMAGE_PIXELS`]; `name` only names it in errors.
pub fn decode_image(name: &Path, bytes: &[u8]) -> Result<image::DynamicImage, ReadError> {
    image_size_checked(name, bytes)?;
    image::load_from_memory(bytes).map_err(|e| ReadError::NotImage {
        path: name.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("frame.jpg");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Would block forever in a plain open(): no writer.
        let e = read_regular(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let link = dir.path().join("zero.jpg");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_regular(&link, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_regular(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn size_cap_is_stated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        std::fs::write(&p, vec![0u8; 1001]).unwrap();
        let e = read_regular(&p, 1000).unwrap_err();
        assert!(
            e.to_string()
                .contains("1001 bytes is over the 1000-byte limit"),
            "{e}"
        );
        assert_eq!(read_regular(&p, 1001).unwrap().len(), 1001);
    }
}

//! JPEG framing: splitting an MJPEG byte stream (concatenated JPEGs) into frames, a
//! cheap validity check for frames we did not produce ourselves, and a smaller copy of a
//! frame for keeping (event snapshots).
//!
//! Splitting walks the marker segments instead of searching for `FF D9`, because an
//! embedded EXIF thumbnail carries its own end-of-image marker.

use std::io::{BufRead, ErrorKind as IoKind};

#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error("frame longer than {max} bytes")]
    TooLarge { max: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("{0}")]
    Invalid(String),
    #[error("no JPEG start-of-image marker")]
    NoStart,
    #[error("no JPEG end-of-image marker (truncated?)")]
    NoEnd,
    #[error("JPEG header: {0}")]
    Header(#[source] image::ImageError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn byte<R: BufRead>(r: &mut R) -> Result<Option<u8>, std::io::Error> {
    loop {
        let b = match r.fill_buf() {
            Ok([]) => return Ok(None),
            Ok(b) => b[0],
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        r.consume(1);
        return Ok(Some(b));
    }
}

struct Out<'a> {
    buf: &'a mut Vec<u8>,
    max: usize,
}

impl Out<'_> {
    fn put(&mut self, b: u8) -> Result<(), JpegError> {
        if self.buf.len() >= self.max {
            return Err(JpegError::TooLarge { max: self.max });
        }
        self.buf.push(b);
        Ok(())
    }
}

fn need<R: BufRead>(r: &mut R) -> Result<u8, JpegError> {
    byte(r)?.ok_or(JpegError::Truncated)
}

/// Copy a marker segment's length and payload (the marker itself is already out).
fn copy_segment<R: BufRead>(r: &mut R, out: &mut Out<'_>) -> Result<(), JpegError> {
    let hi = need(r)?;
    let lo = need(r)?;
    let len = usize::from(hi) << 8 | usize::from(lo);
    if len < 2 {
        return Err(JpegError::Invalid(format!("segment length {len}")));
    }
    out.put(hi)?;
    out.put(lo)?;
    for _ in 0..len - 2 {
        let b = need(r)?;
        out.put(b)?;
    }
    Ok(())
}

/// Read the next complete JPEG (SOI through EOI) from `r` into `buf` (cleared first).
/// Bytes before the next SOI are skipped and their count returned alongside. `Ok(None)`
/// at a clean end of stream. On `TooLarge` or `Invalid` the stream is positioned after
/// the offending bytes, so the caller can count the frame and call again to resync.
pub fn read_jpeg<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<usize>, JpegError> {
    buf.clear();
    // Find SOI.
    let mut skipped = 0usize;
    let mut prev = 0u8;
    loop {
        match byte(r)? {
            None => return Ok(None),
            Some(0xD8) if prev == 0xFF => break,
            Some(b) => {
                skipped += 1;
                prev = b;
            }
        }
    }
    skipped = skipped.saturating_sub(1);
    let mut out = Out { buf, max };
    out.put(0xFF)?;
    out.put(0xD8)?;
    loop {
        // Expect a marker.
        let mut m = need(r)?;
        if m != 0xFF {
            return Err(JpegError::Invalid(format!(
                "expected a marker, found byte {m:#04x}"
            )));
        }
        while m == 0xFF {
            m = need(r)?;
        }
        out.put(0xFF)?;
        out.put(m)?;
        match m {
            0xD9 => return Ok(Some(skipped)),
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(JpegError::Invalid("SOI inside a frame".into())),
            _ => {}
        }
        copy_segment(r, &mut out)?;
        if m == 0xDA {
            // Entropy-coded data runs until a marker other than a stuffed zero or a
            // restart marker; that marker is handled by the loop above.
            loop {
                let b = need(r)?;
                if b != 0xFF {
                    out.put(b)?;
                    continue;
                }
                let mut n = need(r)?;
                while n == 0xFF {
                    n = need(r)?;
                }
                if n == 0x00 || (0xD0..=0xD7).contains(&n) {
                    out.put(0xFF)?;
                    out.put(n)?;
                    continue;
                }
                out.put(0xFF)?;
                out.put(n)?;
                if n == 0xD9 {
                    return Ok(Some(skipped));
                }
                // Another segment after the scan (progressive JPEG, DNL, ...).
                copy_segment(r, &mut out)?;
                if n != 0xDA {
                    break;
                }
            }
        }
    }
}

/// Check that `bytes` is one whole JPEG whose header parses, and return its size. Does
/// not decode the scan: that is the consumer's job, and it must cope with a bad scan too.
pub fn validate_jpeg(bytes: &[u8]) -> Result<(u32, u32), JpegError> {
    if bytes.len() < 4 || bytes[..2] != [0xFF, 0xD8] {
        return Err(JpegError::NoStart);
    }
    if bytes[bytes.len() - 2..] != [0xFF, 0xD9] {
        return Err(JpegError::NoEnd);
    }
    use image::ImageDecoder;
    let dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(JpegError::Header)?;
    Ok(dec.dimensions())
}

/// A copy of `jpeg` at most about `max_width` pixels across for keeping: `None` when it is
/// already that small (keep it as captured, no re-encode). Decoded at the JPEG's own DCT
/// scale (1/8 steps, at least `max_width` across, so at most about twice it), encoded at
/// `quality`.
pub fn shrink_jpeg(jpeg: &[u8], max_width: u16, quality: u8) -> Result<Option<Vec<u8>>, JpegError> {
    let bad = |e: jpeg_decoder::Error| JpegError::Invalid(e.to_string());
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info().map_err(bad)?;
    let info = d.info().ok_or(JpegError::NoStart)?;
    if info.width <= max_width {
        return Ok(None);
    }
    let h = (u32::from(max_width) * u32::from(info.height) / u32::from(info.width)) as u16;
    let (w, h) = d.scale(max_width, h.max(1)).map_err(bad)?;
    let px = d.decode().map_err(bad)?;
    let color = match d.info().map(|i| i.pixel_format) {
        Some(jpeg_decoder::PixelFormat::RGB24) => jpeg_encoder::ColorType::Rgb,
        Some(jpeg_decoder::PixelFormat::L8) => jpeg_encoder::ColorType::Luma,
        other => return Err(JpegError::Invalid(format!("pixel format {other:?}"))),
    };
    let mut out = Vec::with_capacity(px.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&px, w, h, color)
        .map_err(|e| JpegError::Invalid(e.to_string()))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_garbage_and_thumbnail_eoi() {
        // A frame whose APP1 segment carries a fake embedded EOI, then a minimal scan.
        let frame: Vec<u8> = vec![
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x12, 0x34, 0xFF, 0xDA, 0x00, 0x02,
            0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD3, 0x33, 0xFF, 0xD9,
        ];
        let mut stream = vec![0x00, 0x01, 0xFF];
        stream.extend_from_slice(&frame);
        stream.extend_from_slice(&frame);
        let mut r = std::io::Cursor::new(stream);
        let mut buf = Vec::new();
        assert_eq!(read_jpeg(&mut r, &mut buf, 1000).unwrap(), Some(3));
        assert_eq!(buf, frame);
        assert_eq!(read_jpeg(&mut r, &mut buf, 1000).unwrap(), Some(0));
        assert_eq!(buf, frame);
        assert!(read_jpeg(&mut r, &mut buf, 1000).unwrap().is_none());
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let frame = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22];
        let mut r = std::io::Cursor::new(frame.to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_jpeg(&mut r, &mut buf, 1000),
            Err(JpegError::Truncated)
        ));
        let mut r = std::io::Cursor::new(frame.to_vec());
        assert!(matches!(
            read_jpeg(&mut r, &mut buf, 4),
            Err(JpegError::TooLarge { max: 4 })
        ));
    }

    #[test]
    fn snapshots_of_wide_frames_shrink_and_small_ones_stay_as_captured() {
        let (w, h) = (1280u16, 720u16);
        let px: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut big = Vec::new();
        jpeg_encoder::Encoder::new(&mut big, 85)
            .encode(&px, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let small = shrink_jpeg(&big, 640, 80).unwrap().expect("shrunk");
        assert_eq!(validate_jpeg(&small).unwrap(), (640, 360));
        assert!(small.len() < big.len());
        assert!(shrink_jpeg(&small, 640, 80).unwrap().is_none());
        assert!(shrink_jpeg(b"not a jpeg", 640, 80).is_err());
    }
}

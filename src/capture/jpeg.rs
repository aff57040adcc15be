//! JPEG framing: splitting an MJPEG byte stream (concatenated JPEGs) into frames, a
//! cheap validity check for frames we did not produce ourselves, a smaller copy of a
//! frame for keeping (event snapshots), and the one JPEG encoder every frame nvr-edge
//! makes goes through ([`encode`]).
//!
//! The encoder is libjpeg-turbo's (as mozjpeg in its fastest, libjpeg-turbo-compatible
//! profile, built from source by the `mozjpeg` crate: NASM SIMD on x86_64, NEON on
//! aarch64): 0.45-0.74 ms for a 640x480 frame where the pure-Rust `jpeg-encoder` takes
//! 1.6-2.4 ms on the same machine, same quality and size (docs/design/capture.md).
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
    #[error("JPEG encode: {0}")]
    Encode(String),
}

/// What the bytes given to [`encode`] hold, per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// Y, Cb, Cr (full resolution; the encoder subsamples chroma to 4:2:0).
    Ycbcr,
    Rgb,
    Luma,
}

impl Pixels {
    fn bytes(self) -> usize {
        match self {
            Pixels::Ycbcr | Pixels::Rgb => 3,
            Pixels::Luma => 1,
        }
    }
}

/// Append a baseline JPEG of the `w` x `h` image `px` (rows packed, no padding) at
/// `quality` (1-100, IJG scale) to `out`. A size that does not match `px` is refused
/// before the encoder sees it; an error inside libjpeg (it reports them by unwinding) is
/// caught and returned, so a capture thread never dies of one.
pub fn encode(
    px: &[u8],
    w: u16,
    h: u16,
    pixels: Pixels,
    quality: u8,
    out: &mut Vec<u8>,
) -> Result<(), JpegError> {
    use mozjpeg::{ColorSpace, Compress};
    let want = usize::from(w) * usize::from(h) * pixels.bytes();
    if w == 0 || h == 0 || px.len() != want {
        return Err(JpegError::Encode(format!(
            "{} bytes for a {w}x{h} {pixels:?} image (want {want})",
            px.len()
        )));
    }
    let space = match pixels {
        Pixels::Ycbcr => ColorSpace::JCS_YCbCr,
        Pixels::Rgb => ColorSpace::JCS_RGB,
        Pixels::Luma => ColorSpace::JCS_GRAYSCALE,
    };
    let run = || -> std::io::Result<()> {
        let mut c = Compress::new(space);
        // libjpeg-turbo's settings: no trellis, no progressive scans, no optimised
        // Huffman tables (mozjpeg's defaults cost 5-10x the time for ~10 % fewer bytes).
        c.set_fastest_defaults();
        c.set_size(usize::from(w), usize::from(h));
        c.set_quality(f32::from(quality.clamp(1, 100)));
        let mut started = c.start_compress(&mut *out)?;
        started.write_scanlines(px)?;
        started.finish()?;
        Ok(())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r.map_err(JpegError::from),
        Err(panic) => Err(JpegError::Encode(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into()),
        )),
    }
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
    let pixels = match d.info().map(|i| i.pixel_format) {
        Some(jpeg_decoder::PixelFormat::RGB24) => Pixels::Rgb,
        Some(jpeg_decoder::PixelFormat::L8) => Pixels::Luma,
        other => return Err(JpegError::Invalid(format!("pixel format {other:?}"))),
    };
    let mut out = Vec::with_capacity(px.len() / 8);
    encode(&px, w, h, pixels, quality, &mut out)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode with an independent decoder: (width, height, pixels).
    fn decode(jpeg: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut d = jpeg_decoder::Decoder::new(jpeg);
        let px = d.decode().unwrap();
        let info = d.info().unwrap();
        (info.width, info.height, px)
    }

    #[test]
    fn encodes_what_a_decoder_reads_back_in_every_layout_and_refuses_wrong_sizes() {
        // Odd sizes: partial MCUs at the right and bottom edges.
        let (w, h) = (37u16, 21u16);
        let n = usize::from(w) * usize::from(h);
        // Smooth colour gradients (chroma is subsampled 4:2:0: sharp colour edges would
        // blur by design).
        let rgb: Vec<u8> = (0..n)
            .flat_map(|i| {
                let (x, y) = (i % usize::from(w), i / usize::from(w));
                [(x * 6) as u8, (200 - y * 4) as u8, ((x + y) * 3) as u8]
            })
            .collect();
        let mut out = vec![1, 2, 3];
        encode(&rgb, w, h, Pixels::Rgb, 95, &mut out).unwrap();
        assert_eq!(&out[..3], &[1, 2, 3], "appends");
        let (dw, dh, px) = decode(&out[3..]);
        assert_eq!((dw, dh, px.len()), (w, h, n * 3));
        let worst = px
            .iter()
            .zip(&rgb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 24, "RGB round trip off by {worst}");
        let mean = px
            .iter()
            .zip(&rgb)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum::<u64>()
            / px.len() as u64;
        assert!(mean <= 3, "RGB mean error {mean}");
        // YCbCr of a grey ramp decodes to that grey.
        let ycc: Vec<u8> = (0..n)
            .flat_map(|i| [(i % 200) as u8 + 20, 128, 128])
            .collect();
        let mut out = Vec::new();
        encode(&ycc, w, h, Pixels::Ycbcr, 95, &mut out).unwrap();
        let (_, _, px) = decode(&out);
        for (i, p) in px.chunks_exact(3).enumerate() {
            let want = (i % 200) as i32 + 20;
            assert!(
                p.iter().all(|&c| (i32::from(c) - want).abs() <= 12),
                "pixel {i}: {p:?}"
            );
        }
        let luma: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
        let mut out = Vec::new();
        encode(&luma, w, h, Pixels::Luma, 80, &mut out).unwrap();
        assert_eq!(decode(&out).2.len(), n);
        for (px, w, h) in [(&rgb[1..], w, h), (&rgb[..], 0, h), (&rgb[..], w, 0)] {
            let e = encode(px, w, h, Pixels::Rgb, 80, &mut Vec::new()).unwrap_err();
            assert!(e.to_string().contains("bytes for a"), "{e}");
        }
    }

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

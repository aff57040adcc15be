//! V4L2 cameras (USB UVC, MIPI through a V4L2 driver, vivid in tests) with mmap streaming.
//!
//! Format choice: the configured `pixel_format` when the device offers it at the asked
//! size, else MJPEG (stored as the camera sent it: no decode, no re-encode), else YUYV,
//! else NV12 (both converted to YCbCr and encoded to JPEG at `jpeg_quality`). What the
//! driver granted (format, size, frame interval) is read back and reported, because
//! drivers round: vivid gives 25 fps at 640x480 on a 6.1 kernel when 30 is asked.
//!
//! Errors map to the capture loop's kinds once, here: ENODEV/ENXIO/EIO (unplugged,
//! unbound, power-cycled) and a silent device (no frame within the timeout) are `Gone`,
//! so the camera is reopened with backoff; a short or corrupt buffer is a `BadFrame`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC, Fraction};

use super::jpeg::{self, validate_jpeg, Pixels};
use super::{Captured, FrameSource, SourceError, SourceInfo};
use crate::clock::Clock;
use crate::config::{CameraConfig, PreferredFormat};
use crate::ring::{FrameFormat, FrameMeta};

pub const MJPG: [u8; 4] = *b"MJPG";
pub const YUYV: [u8; 4] = *b"YUYV";
pub const NV12: [u8; 4] = *b"NV12";

/// Buffers queued to the driver: enough to ride out a slow ring push, few enough to keep
/// latency and memory low.
const BUFFERS: u32 = 4;

fn preferred(p: PreferredFormat) -> [u8; 4] {
    match p {
        PreferredFormat::Mjpeg => MJPG,
        PreferredFormat::Yuyv => YUYV,
        PreferredFormat::Nv12 => NV12,
    }
}

/// Pick a pixel format from what the device offers: the preference first, then MJPEG,
/// YUYV, NV12. `None` when it offers none of them.
pub fn choose_format(offered: &[[u8; 4]], pref: PreferredFormat) -> Option<[u8; 4]> {
    let want = preferred(pref);
    std::iter::once(want)
        .chain([MJPG, YUYV, NV12])
        .find(|f| offered.contains(f))
}

/// The size to ask for: the configured one when the device lists it (or lists a stepwise
/// range around it, given as an empty `offered`), else the listed size closest in area.
pub fn nearest_size(offered: &[(u32, u32)], want: (u32, u32)) -> (u32, u32) {
    if offered.is_empty() || offered.contains(&want) {
        return want;
    }
    let area = |(w, h): (u32, u32)| i64::from(w) * i64::from(h);
    *offered
        .iter()
        .min_by_key(|&&s| ((area(s) - area(want)).abs(), std::cmp::Reverse(area(s))))
        .unwrap_or(&want)
}

/// YUYV (4:2:2 packed) to YCbCr 4:4:4 interleaved, the JPEG encoder's input. `stride` is
/// the driver's bytes per line.
pub fn yuyv_to_ycbcr(src: &[u8], w: usize, h: usize, stride: usize, out: &mut Vec<u8>) -> bool {
    if !w.is_multiple_of(2) || stride < w * 2 || src.len() < stride * (h - 1) + w * 2 {
        return false;
    }
    out.clear();
    out.reserve(w * h * 3);
    for y in 0..h {
        let line = &src[y * stride..y * stride + w * 2];
        for px in line.chunks_exact(4) {
            let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
            out.extend_from_slice(&[y0, u, v, y1, u, v]);
        }
    }
    true
}

/// NV12 (Y plane, then interleaved UV at half resolution) to YCbCr 4:4:4 interleaved.
pub fn nv12_to_ycbcr(src: &[u8], w: usize, h: usize, stride: usize, out: &mut Vec<u8>) -> bool {
    if !w.is_multiple_of(2)
        || !h.is_multiple_of(2)
        || stride < w
        || src.len() < stride * h + stride * (h / 2 - 1) + w
    {
        return false;
    }
    let uv = &src[stride * h..];
    out.clear();
    out.reserve(w * h * 3);
    for y in 0..h {
        let yl = &src[y * stride..y * stride + w];
        let cl = &uv[(y / 2) * stride..(y / 2) * stride + w];
        for (x, &l) in yl.iter().enumerate() {
            let c = (x / 2) * 2;
            out.extend_from_slice(&[l, cl[c], cl[c + 1]]);
        }
    }
    true
}

pub struct V4l2Source {
    info: SourceInfo,
    stream: Stream<'static>,
    fourcc: [u8; 4],
    width: u32,
    height: u32,
    stride: usize,
    quality: u8,
    scratch: Vec<u8>,
    clock: Arc<dyn Clock>,
    last_seq: Option<u32>,
    last_ts: i64,
}

fn io_err<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> SourceError + 'a {
    let what = what.to_string();
    move |e| SourceError::from_io(&format!("{}: {what}", path.display()), &e)
}

impl V4l2Source {
    pub fn open(cam: &CameraConfig, clock: Arc<dyn Clock>) -> Result<Self, SourceError> {
        let path = cam
            .device
            .as_deref()
            .ok_or_else(|| SourceError::Unavailable("v4l2 camera without a device".into()))?;
        let dev = Device::with_path(path).map_err(io_err("open", path))?;
        let caps = dev.query_caps().map_err(io_err("VIDIOC_QUERYCAP", path))?;
        let offered: Vec<[u8; 4]> = dev
            .enum_formats()
            .map_err(io_err("VIDIOC_ENUM_FMT", path))?
            .iter()
            .map(|f| f.fourcc.repr)
            .collect();
        let Some(fourcc) = choose_format(&offered, cam.pixel_format) else {
            let names: Vec<String> = offered
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            return Err(SourceError::Unavailable(format!(
                "{}: offers {}; nvr-edge needs MJPG, YUYV or NV12",
                path.display(),
                names.join(", ")
            )));
        };
        // What the device lists for this format: discrete sizes (stepwise ranges accept the
        // configured size as it is) and the frame rates at the chosen size.
        let discrete: Vec<(u32, u32)> = dev
            .enum_framesizes(FourCC::new(&fourcc))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|fs| match fs.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => Some((d.width, d.height)),
                v4l::framesize::FrameSizeEnum::Stepwise(_) => None,
            })
            .collect();
        let (w, h) = nearest_size(&discrete, (cam.width, cam.height));
        if (w, h) != (cam.width, cam.height) {
            tracing::warn!(device = %path.display(), asked = ?(cam.width, cam.height), using = ?(w, h), "size not offered; using the closest");
        }
        let rates: Vec<String> = dev
            .enum_frameintervals(FourCC::new(&fourcc), w, h)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|fi| match fi.interval {
                v4l::frameinterval::FrameIntervalEnum::Discrete(f) if f.numerator > 0 => Some(
                    format!("{:.4}", f64::from(f.denominator) / f64::from(f.numerator)),
                ),
                _ => None,
            })
            .map(|r| r.trim_end_matches('0').trim_end_matches('.').to_string())
            .take(12)
            .collect();
        let mut fmt = dev.format().map_err(io_err("VIDIOC_G_FMT", path))?;
        fmt.width = w;
        fmt.height = h;
        fmt.fourcc = FourCC::new(&fourcc);
        let fmt = dev.set_format(&fmt).map_err(io_err("VIDIOC_S_FMT", path))?;
        if fmt.fourcc.repr != fourcc {
            return Err(SourceError::Unavailable(format!(
                "{}: asked for {}, driver set {}",
                path.display(),
                String::from_utf8_lossy(&fourcc),
                fmt.fourcc
            )));
        }
        // Ask for the rate as a fraction of 1/1000 s and read back what was granted.
        let asked = Fraction::new(1000, (cam.fps * 1000.0).round() as u32);
        let granted = dev
            .set_params(&v4l::video::capture::Parameters::new(asked))
            .or_else(|_| dev.params())
            .map(|p| p.interval)
            .ok();
        let fps = granted.filter(|f| f.numerator > 0).map_or(cam.fps, |f| {
            f64::from(f.denominator) / f64::from(f.numerator)
        });
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(io_err("VIDIOC_REQBUFS", path))?;
        // A device that stops delivering without an error is as good as gone.
        let timeout = Duration::from_secs_f64((5.0 / fps.max(0.1)).max(2.0));
        stream.set_timeout(timeout);
        Ok(Self {
            info: SourceInfo {
                driver: caps.driver.clone(),
                format: if fourcc == MJPG {
                    FrameFormat::Jpeg
                } else {
                    FrameFormat::Raw(fourcc)
                },
                width: fmt.width,
                height: fmt.height,
                fps,
                detail: format!(
                    "{} ({}, {}), {} {}x{} @ {:.2} fps granted (offers {} sizes, fps {}){}",
                    path.display(),
                    caps.card,
                    caps.bus,
                    String::from_utf8_lossy(&fourcc),
                    fmt.width,
                    fmt.height,
                    fps,
                    if discrete.is_empty() {
                        "stepwise".to_string()
                    } else {
                        discrete.len().to_string()
                    },
                    if rates.is_empty() {
                        "-".to_string()
                    } else {
                        rates.join("/")
                    },
                    if fourcc == MJPG {
                        String::new()
                    } else {
                        format!(", encoded to JPEG q{}", cam.jpeg_quality)
                    }
                ),
            },
            stream,
            fourcc,
            width: fmt.width,
            height: fmt.height,
            stride: fmt.stride as usize,
            quality: cam.jpeg_quality,
            scratch: Vec::new(),
            clock,
            last_seq: None,
            last_ts: i64::MIN,
        })
    }

    pub fn fourcc(&self) -> [u8; 4] {
        self.fourcc
    }
}

impl FrameSource for V4l2Source {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Captured, SourceError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (data, meta) = match self.stream.next() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.raw_os_error().is_none() => {
                return Err(SourceError::Gone(format!("no frame from the device: {e}")))
            }
            Err(e) => return Err(SourceError::from_io("VIDIOC_DQBUF", &e)),
        };
        let used = (meta.bytesused as usize).min(data.len());
        let bytes = &data[..used];
        let seq = meta.sequence;
        let dropped = self.last_seq.map_or(0, |last| {
            u64::from(seq.wrapping_sub(last).saturating_sub(1))
        });
        self.last_seq = Some(seq);
        // Driver timestamps are CLOCK_MONOTONIC, the ring's clock; fall back to ours when a
        // driver leaves them empty or steps back.
        // time_t is i32 on 32-bit targets, i64 here.
        #[allow(clippy::unnecessary_cast)]
        let driver_ts = meta.timestamp.sec as i64 * 1_000_000 + meta.timestamp.usec as i64;
        let ts = if driver_ts > 0 && driver_ts >= self.last_ts {
            driver_ts
        } else {
            self.clock.mono_us().max(self.last_ts)
        };
        self.last_ts = ts;
        buf.clear();
        // An MJPEG frame reports the size its header claims (the capture loop refuses one
        // that differs from the granted size); frames nvr-edge encodes have that size.
        let (width, height) = match self.fourcc {
            MJPG => {
                let size =
                    validate_jpeg(bytes).map_err(|e| SourceError::BadFrame(e.to_string()))?;
                buf.extend_from_slice(bytes);
                size
            }
            f => {
                let ok = if f == YUYV {
                    yuyv_to_ycbcr(bytes, w, h, self.stride.max(w * 2), &mut self.scratch)
                } else {
                    nv12_to_ycbcr(bytes, w, h, self.stride.max(w), &mut self.scratch)
                };
                if !ok {
                    return Err(SourceError::BadFrame(format!(
                        "{} buffer of {used} bytes is short for {w}x{h}",
                        String::from_utf8_lossy(&f)
                    )));
                }
                jpeg::encode(
                    &self.scratch,
                    w as u16,
                    h as u16,
                    Pixels::Ycbcr,
                    self.quality,
                    buf,
                )
                .map_err(|e| SourceError::BadFrame(e.to_string()))?;
                (self.width, self.height)
            }
        };
        Ok(Captured {
            meta: FrameMeta {
                seq: u64::from(seq),
                ts_us: ts,
                width,
                height,
                format: FrameFormat::Jpeg,
            },
            dropped_before: dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_choice_follows_preference_then_mjpeg_yuyv_nv12() {
        let all = [NV12, YUYV, MJPG];
        assert_eq!(choose_format(&all, PreferredFormat::Mjpeg), Some(MJPG));
        assert_eq!(choose_format(&all, PreferredFormat::Nv12), Some(NV12));
        assert_eq!(
            choose_format(&[NV12, YUYV], PreferredFormat::Mjpeg),
            Some(YUYV)
        );
        assert_eq!(
            choose_format(&[*b"RGB3", *b"GREY"], PreferredFormat::Mjpeg),
            None
        );
    }

    #[test]
    fn size_choice_keeps_an_offered_size_else_the_closest() {
        let offered = [(320, 180), (640, 360), (640, 480), (1280, 720)];
        assert_eq!(nearest_size(&offered, (640, 480)), (640, 480));
        assert_eq!(nearest_size(&offered, (320, 240)), (320, 180));
        assert_eq!(nearest_size(&offered, (1920, 1080)), (1280, 720));
        assert_eq!(
            nearest_size(&[], (333, 222)),
            (333, 222),
            "stepwise: ask as configured"
        );
    }

    #[test]
    fn yuyv_and_nv12_expand_to_ycbcr444() {
        // 2x2 image.
        let yuyv = [10, 100, 20, 200, 30, 101, 40, 201];
        let mut out = Vec::new();
        assert!(yuyv_to_ycbcr(&yuyv, 2, 2, 4, &mut out));
        assert_eq!(
            out,
            [10, 100, 200, 20, 100, 200, 30, 101, 201, 40, 101, 201]
        );
        let nv12 = [10, 20, 30, 40, 100, 200];
        assert!(nv12_to_ycbcr(&nv12, 2, 2, 2, &mut out));
        assert_eq!(
            out,
            [10, 100, 200, 20, 100, 200, 30, 100, 200, 40, 100, 200]
        );
        assert!(
            !yuyv_to_ycbcr(&yuyv[..6], 2, 2, 4, &mut out),
            "short buffer"
        );
        assert!(
            !nv12_to_ycbcr(&nv12[..5], 2, 2, 2, &mut out),
            "short buffer"
        );
    }
}

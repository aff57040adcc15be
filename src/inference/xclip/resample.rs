//! Pillow's resampling (`Image.resize` with BILINEAR or BICUBIC), reproduced exactly for
//! RGB8 images: the reference processors of CLIP-family models resize with Pillow, and a
//! one-level difference in a resized pixel moves a small model's logits visibly.
//!
//! Written by hand because no Rust crate matches Pillow bit for bit: `fast_image_resize`
//! uses the same filters but another pass order and rounding, which differs by up to 14
//! levels next to sharp edges (measured against Pillow on our fixtures). What Pillow
//! does, and so what this does:
//! - per output pixel, filter weights over the source pixels within `support * scale`
//!   (scale >= 1 when downscaling, so the filter widens and anti-aliases), normalised to
//!   sum 1, then converted to fixed point with 22 fractional bits, rounded half away from 0;
//! - a horizontal pass over only the source rows the vertical pass will read, into an
//!   8-bit intermediate (clipped to 0..=255), then the vertical pass.

const PRECISION_BITS: u32 = 32 - 8 - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point weights of one axis: for output index i, source pixels
/// `start[i] .. start[i] + len[i]` with weights `k[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut c = Coeffs {
        ksize,
        start: Vec::with_capacity(out_size),
        len: Vec::with_capacity(out_size),
        k: vec![0; out_size * ksize],
    };
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *wx;
        }
        let row = &mut c.k[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let v = if total != 0.0 { w[x] / total } else { w[x] };
            let f = v * f64::from(1u32 << PRECISION_BITS);
            row[x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        c.start.push(xmin);
        c.len.push(n);
    }
    c
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize an RGB8 image (`w * h * 3` bytes) to `ow x oh` exactly as Pillow does.
pub fn resize_rgb8(
    src: &[u8],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * 3, "RGB8 buffer size");
    let horiz = coeffs(w, ow, filter);
    let vert = coeffs(h, oh, filter);
    let need_h = ow != w;
    let need_v = oh != h;
    let half = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass over the rows the vertical pass reads.
    let (first, last) = (vert.start[0], vert.start[oh - 1] + vert.len[oh - 1]);
    let (tmp, tw, row0) = if need_h {
        let rows = last - first;
        let mut tmp = vec![0u8; ow * rows * 3];
        for y in 0..rows {
            let line = &src[(y + first) * w * 3..(y + first + 1) * w * 3];
            for xx in 0..ow {
                let (s, n) = (horiz.start[xx], horiz.len[xx]);
                let k = &horiz.k[xx * horiz.ksize..];
                let mut acc = [half; 3];
                for (x, &kx) in k[..n].iter().enumerate() {
                    let p = (s + x) * 3;
                    for ch in 0..3 {
                        acc[ch] += i32::from(line[p + ch]) * kx;
                    }
                }
                let o = (y * ow + xx) * 3;
                for ch in 0..3 {
                    tmp[o + ch] = clip8(acc[ch]);
                }
            }
        }
        (tmp, ow, first)
    } else {
        (src.to_vec(), w, 0)
    };
    if !need_v {
        return tmp;
    }
    let mut out = vec![0u8; ow * oh * 3];
    for yy in 0..oh {
        let (s, n) = (vert.start[yy] - row0, vert.len[yy]);
        let k = &vert.k[yy * vert.ksize..];
        for xx in 0..ow {
            let mut acc = [half; 3];
            for (y, &ky) in k[..n].iter().enumerate() {
                let p = ((s + y) * tw + xx) * 3;
                for ch in 0..3 {
                    acc[ch] += i32::from(tmp[p + ch]) * ky;
                }
            }
            let o = (yy * ow + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

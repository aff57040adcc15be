//! Dense layers (`y = x W + b`, weights constant) on x86_64 CPUs with AVX-512.
//!
//! Why a product of our own: X-CLIP's video graph is 90% dense layers (400 token rows
//! against 768 x 768 and 768 x 3072 weights), and tract runs them by packing the
//! activations into its kernel's panel layout before every product (~11 ms a clip) and
//! with a kernel its cost model picks per shape, which on AMD Zen picks a shape ~6% slower
//! for the q/k/v projections. Here the weights are packed once at load into 32-column
//! panels and the activations are read where they lie: each kernel call holds a block of
//! up to [`MR`] rows x 32 columns in 24 of the 32 vector registers and walks the full
//! depth once, broadcasting one activation per row and step (the layout onnxruntime's MLAS
//! uses, which is what the benchmark compares against).
//!
//! Only on the AVX-512 tier ([`available`]): on AVX2 and on the aarch64 device tract's own
//! kernels run, which is where they are at their best. The tract op around it and the
//! graph rewrite that puts it in place of tract's einsum are nvr-edge's
//! (`inference::ops`).

use std::sync::Arc;

use crate::tier::Tier;

/// Rows per kernel call: 12 x 2 accumulators, 2 weight registers, broadcasts in the rest.
pub const MR: usize = 12;
/// Columns per weight panel: two 16-lane registers.
pub const NR: usize = 32;

/// One 64-byte-aligned block of 16 floats, so every weight load is one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Weights `[k, n]` packed as `ceil(n / 32)` panels of `k x 32` (zero padded), with the
/// bias padded alike.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PackedWeights {
    k: usize,
    n: usize,
    panels: Vec<Line>,
    bias: Vec<Line>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights({}x{})", self.k, self.n)
    }
}

impl PackedWeights {
    /// Pack `w` (`k` rows of `n`, row-major) and `bias` (`n` values, or none).
    pub fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Arc<Self> {
        assert_eq!(w.len(), k * n, "weights are not {k} x {n}");
        let np = n.div_ceil(NR);
        let mut panels = vec![Line([0.0; 16]); np * k * 2];
        for p in 0..np {
            let cols = (n - p * NR).min(NR);
            for kk in 0..k {
                let base = (p * k + kk) * 2;
                for c in 0..cols {
                    panels[base + c / 16].0[c % 16] = w[kk * n + p * NR + c];
                }
            }
        }
        let mut padded = vec![Line([0.0; 16]); np * 2];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias is not {n} long");
            for (i, v) in b.iter().enumerate() {
                padded[i / 16].0[i % 16] = *v;
            }
        }
        Arc::new(PackedWeights {
            k,
            n,
            panels,
            bias: padded,
        })
    }

    pub fn depth(&self) -> usize {
        self.k
    }

    pub fn width(&self) -> usize {
        self.n
    }

    /// Bytes held (the model's resident figure counts them).
    pub fn bytes(&self) -> usize {
        (self.panels.len() + self.bias.len()) * std::mem::size_of::<Line>()
    }
}

/// Whether the kernel runs here: the current tier is AVX-512 ([`Tier::current`]).
pub fn available() -> bool {
    Tier::current().avx512()
}

/// `out[m, n] = x[m, k] * W + b` for rows `x` (row-major, `m * k`), single-threaded.
///
/// Panics when the CPU lacks AVX-512 ([`available`]) or the sizes disagree; the graph
/// rewrite checks both before it puts a the dense op in a plan.
pub fn dense(x: &[f32], w: &PackedWeights, out: &mut [f32]) {
    assert!(available(), "dense kernel needs AVX-512");
    let (k, n) = (w.k, w.n);
    assert!(k > 0 && x.len().is_multiple_of(k), "rows of {k} expected");
    let m = x.len() / k;
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 F is present (asserted above); the slices' lengths were checked
    // against m, k and n, and the kernel reads x[..m*k], the padded panels and writes
    // out[..m*n] only.
    unsafe {
        avx512::product(x.as_ptr(), m, w, out.as_mut_ptr())
    }
}

/// The patch embedding's product read in place: `out[r, :] = patch(first + r) W + b` for
/// the non-overlapping `ph x pw` patches of `x` (`[b, c, h, w]`), patches in row-major
/// grid order, each patch's values in the kernel's (channel, row, column) order. The same
/// sums in the same order as [`dense`] over the patches copied into rows, without the
/// copy (4.8 MB a clip at 8 frames: ~0.1 ms, and ~8% of the tiny test model's clip).
///
/// Panics when the CPU lacks AVX-512 ([`available`]) or the sizes disagree.
pub fn patch_dense(
    x: &[f32],
    shape: [usize; 4],
    patch: [usize; 2],
    first: usize,
    w: &PackedWeights,
    out: &mut [f32],
) {
    assert!(available(), "dense kernel needs AVX-512");
    let [b, c, h, wd] = shape;
    let [ph, pw] = patch;
    assert!(
        ph > 0 && pw > 0 && h % ph == 0 && wd % pw == 0,
        "{patch:?} does not tile {shape:?}"
    );
    assert_eq!(w.k, c * ph * pw, "patches of {} values expected", w.k);
    assert_eq!(x.len(), b * c * h * wd, "input is not {shape:?}");
    let m = out.len() / w.n;
    assert_eq!(out.len(), m * w.n, "output is not rows of {}", w.n);
    assert!(
        first + m <= b * (h / ph) * (wd / pw),
        "patches {first}..{} of {shape:?}",
        first + m
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 F is present (asserted above); every patch read lies in x (the
    // patch numbers were checked against the grid, the grid against x's length), and the
    // kernel writes out[..m*n] only.
    unsafe {
        avx512::patch_product(x.as_ptr(), shape, patch, first, m, w, out.as_mut_ptr())
    }
}

#[cfg(target_arch = "x86_64")]
// Each fn's `# Safety` contract (AVX-512 F present, pointers within the sizes the safe
// wrappers checked) covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
pub(crate) mod avx512 {
    use super::{PackedWeights, MR, NR};
    use std::arch::x86_64::*;

    /// `$tile::<R>(args)` for the `R` (1 to [`MR`]) that `$rows` holds: the tiles are
    /// compiled per row count so their accumulators stay in registers.
    macro_rules! by_rows {
        ($rows:expr, $tile:ident($($arg:expr),*)) => {
            match $rows {
                12 => $tile::<12>($($arg),*),
                11 => $tile::<11>($($arg),*),
                10 => $tile::<10>($($arg),*),
                9 => $tile::<9>($($arg),*),
                8 => $tile::<8>($($arg),*),
                7 => $tile::<7>($($arg),*),
                6 => $tile::<6>($($arg),*),
                5 => $tile::<5>($($arg),*),
                4 => $tile::<4>($($arg),*),
                3 => $tile::<3>($($arg),*),
                2 => $tile::<2>($($arg),*),
                _ => $tile::<1>($($arg),*),
            }
        };
    }
    pub(crate) use by_rows;

    /// Every tile of an `m`-row product by `w`: `f(first_row, rows, panel, bias, out,
    /// cols)`, `out` at the tile's first result. Panel outer, so one panel (k x 128
    /// bytes) stays in L2 while the row blocks stream past it.
    #[inline(always)]
    unsafe fn each_tile(
        m: usize,
        w: &PackedWeights,
        out: *mut f32,
        mut f: impl FnMut(usize, usize, *const f32, *const f32, *mut f32, usize),
    ) {
        let (k, n) = (w.k, w.n);
        for p in 0..n.div_ceil(NR) {
            let cols = (n - p * NR).min(NR);
            let panel = w.panels.as_ptr().add(p * k * 2) as *const f32;
            let bias = w.bias.as_ptr().add(p * 2) as *const f32;
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(MR);
                f(r, rows, panel, bias, out.add(r * n + p * NR), cols);
                r += rows;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(x: *const f32, m: usize, w: &PackedWeights, out: *mut f32) {
        let (k, n) = (w.k, w.n);
        each_tile(m, w, out, |r, rows, panel, bias, c, cols| {
            by_rows!(rows, tile(x.add(r * k), k, panel, bias, c, n, cols))
        })
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let (a0, a1) = ([_mm512_load_ps(bias); R], [_mm512_load_ps(bias.add(16)); R]);
        accumulate(x, k, w, a0, a1, c, ldc, cols)
    }

    /// `a0`/`a1` (columns 0-15 / 16-31 of `R` rows) plus `R` rows of `k` values (`k`
    /// apart, one broadcast per row and step) times a 32-column panel (`k` rows of 32),
    /// stored into `c`: the register tile every product here runs.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn accumulate<const R: usize>(
        rows: *const f32,
        k: usize,
        panel: *const f32,
        mut a0: [__m512; R],
        mut a1: [__m512; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        for kk in 0..k {
            let p0 = _mm512_loadu_ps(panel.add(kk * NR));
            let p1 = _mm512_loadu_ps(panel.add(kk * NR + 16));
            for r in 0..R {
                let v = _mm512_set1_ps(*rows.add(r * k + kk));
                a0[r] = _mm512_fmadd_ps(v, p0, a0[r]);
                a1[r] = _mm512_fmadd_ps(v, p1, a1[r]);
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }

    /// A tile's `R` rows of `cols` (<= 32) results into `c`, rows `ldc` apart.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn store<const R: usize>(
        a0: &[__m512; R],
        a1: &[__m512; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        if cols == NR {
            for r in 0..R {
                _mm512_storeu_ps(c.add(r * ldc), a0[r]);
                _mm512_storeu_ps(c.add(r * ldc + 16), a1[r]);
            }
        } else {
            let m0: __mmask16 = ((1u32 << cols.min(16)) - 1) as u16;
            let m1: __mmask16 = ((1u32 << cols.saturating_sub(16)) - 1) as u16;
            for r in 0..R {
                _mm512_mask_storeu_ps(c.add(r * ldc), m0, a0[r]);
                _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, a1[r]);
            }
        }
    }

    /// Where patches lie in a `[b, c, h, w]` image.
    struct Grid {
        c: usize,
        ph: usize,
        pw: usize,
        h: usize,
        w: usize,
        gh: usize,
        gw: usize,
    }

    impl Grid {
        /// Offset of patch `p`'s first value (channel 0, top-left).
        fn start(&self, p: usize) -> usize {
            let (bi, gy, gx) = (p / (self.gh * self.gw), p / self.gw % self.gh, p % self.gw);
            ((bi * self.c * self.h) + gy * self.ph) * self.w + gx * self.pw
        }
    }

    /// [`product`] with row `first + r` read as patch `first + r` of the image `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn patch_product(
        x: *const f32,
        [_, c, h, w]: [usize; 4],
        [ph, pw]: [usize; 2],
        first: usize,
        m: usize,
        wt: &PackedWeights,
        out: *mut f32,
    ) {
        let g = Grid {
            c,
            ph,
            pw,
            h,
            w,
            gh: h / ph,
            gw: w / pw,
        };
        let n = wt.n;
        each_tile(m, wt, out, |r, rows, panel, bias, c, cols| {
            let at = |i: usize| x.add(g.start(first + r + i));
            by_rows!(
                rows,
                patch_tile(std::array::from_fn(at), &g, panel, bias, c, n, cols)
            )
        })
    }

    /// [`tile`] with each row a patch: `c * ph` runs of `pw` contiguous values, run
    /// (channel, row) one image plane or one image row from the last.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn patch_tile<const R: usize>(
        rows: [*const f32; R],
        g: &Grid,
        w: *const f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut a0 = [_mm512_load_ps(bias); R];
        let mut a1 = [_mm512_load_ps(bias.add(16)); R];
        let mut kk = 0;
        for ci in 0..g.c {
            for ky in 0..g.ph {
                let off = (ci * g.h + ky) * g.w;
                for kx in 0..g.pw {
                    let w0 = _mm512_load_ps(w.add(kk * NR));
                    let w1 = _mm512_load_ps(w.add(kk * NR + 16));
                    for r in 0..R {
                        let xv = _mm512_set1_ps(*rows[r].add(off + kx));
                        a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
                        a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
                    }
                    kk += 1;
                }
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }
}

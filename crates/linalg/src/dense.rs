//! Dense layers (`y = x W + b`, weights constant) on x86_64 CPUs with AVX-512 or AVX2+FMA.
//!
//! Why a product of our own: X-CLIP's video graph is 90% dense layers (400 token rows
//! against 768 x 768 and 768 x 3072 weights), and tract runs them by packing the
//! activations into its kernel's panel layout before every product (~11 ms a clip) and
//! with a kernel its cost model picks per shape, which on AMD Zen picks a shape ~6% slower
//! for the q/k/v projections. Here the weights are packed once at load into 32-column
//! panels and the activations are read where they lie: each kernel call holds a block of
//! rows x columns of results in registers and walks the full depth once, broadcasting one
//! activation per row and step (the layout onnxruntime's MLAS uses, which is what the
//! benchmark compares against).
//!
//! Three register tiles over the same packed panels, chosen by [`Tier::current`]: AVX-512,
//! up to [`MR`] rows x 32 columns (24 of 32 registers); AVX2+FMA (the Intel N100 class
//! and older x86), up to [`MR_AVX2`] rows x 16 columns, a panel's two halves one after the
//! other (12 of 16 registers); NEON (aarch64 boards), the same walk with up to [`MR_NEON`]
//! rows x 16 columns (24 of 32 registers). The tract op around it and the graph rewrite
//! that puts it in place of tract's einsum are nvr-edge's (`inference::ops`); the rewrite
//! uses the x86 tiers only ([`available`]): NEON is tested for agreement under qemu, and
//! waits for a measurement on a board against tract's own NEON kernels (qemu cannot time).

use std::sync::Arc;

use crate::tier::Tier;

/// Rows per kernel call on AVX-512: 12 x 2 accumulators, 2 weight registers, broadcasts
/// in the rest. Threads split the rows in blocks of this (a multiple of [`MR_AVX2`]), so
/// every tier computes each element in one call.
pub const MR: usize = 12;
/// Rows per kernel call on AVX2: 6 x 2 accumulators (16 columns), 2 weight registers, one
/// broadcast.
pub const MR_AVX2: usize = 6;
/// Rows per kernel call on NEON: 6 x 4 accumulators (16 columns), 4 weight registers (of
/// 32).
pub const MR_NEON: usize = 6;
/// Columns per weight panel: two 16-lane registers.
pub const NR: usize = 32;

/// One 64-byte-aligned block of 16 floats, so every weight load is one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Weights `[k, n]` packed as `ceil(n / 32)` panels of `k x 32` (zero padded), with the
/// bias padded alike.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
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

/// The tier the dense kernels run at on a CPU of tier `t`: AVX-512, AVX2, NEON or none
/// (portable: tract's own kernels run instead).
pub fn tier_for(t: Tier) -> Option<Tier> {
    if t.avx512() {
        Some(Tier::Avx512)
    } else if t.avx2() {
        Some(Tier::Avx2)
    } else if cfg!(target_arch = "aarch64") && t == Tier::Neon {
        Some(Tier::Neon)
    } else {
        None
    }
}

/// The tiers this CPU has that have dense (and pointwise) kernels, best first: what tests
/// and benches compare.
pub fn tiers_here() -> Vec<Tier> {
    Tier::supported()
        .into_iter()
        .filter(|&t| tier_for(t) == Some(t))
        .collect()
}

/// The tier whose kernels the graph rewrite puts in place of tract's here: the current
/// tier ([`Tier::current`]) when it is AVX2+FMA or AVX-512, where they were measured
/// faster than tract's (benches/xclip.rs, docs/design/kernels.md). Not NEON yet: see the
/// module doc.
pub fn in_graphs() -> Option<Tier> {
    tier_for(Tier::current()).filter(|t| matches!(t, Tier::Avx2 | Tier::Avx512))
}

/// Whether the graph rewrite uses these kernels here ([`in_graphs`]).
pub fn available() -> bool {
    in_graphs().is_some()
}

/// `out[m, n] = x[m, k] * W + b` for rows `x` (row-major, `m * k`), single-threaded, at
/// the current tier.
///
/// Panics when the CPU has no tier with the kernel ([`tier_for`]) or the sizes disagree;
/// the graph rewrite checks both before it puts the dense op in a plan.
pub fn dense(x: &[f32], w: &PackedWeights, out: &mut [f32]) {
    dense_on(Tier::current(), x, w, out)
}

/// [`dense`] at `tier` (tests and benches compare tiers). Panics when the CPU lacks
/// `tier` or `tier` has no dense kernel.
pub fn dense_on(tier: Tier, x: &[f32], w: &PackedWeights, out: &mut [f32]) {
    tier.check();
    let t = tier_for(tier).expect("dense kernels need AVX2+FMA, AVX-512 or NEON");
    let (k, n) = (w.k, w.n);
    assert!(k > 0 && x.len().is_multiple_of(k), "rows of {k} expected");
    let m = x.len() / k;
    assert_eq!(out.len(), m * n, "output is not {m} x {n}");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has `t`'s features (checked above); the slices' lengths were checked
    // against m, k and n, and the kernels read x[..m*k], the padded panels and write
    // out[..m*n] only.
    unsafe {
        match t {
            Tier::Avx512 => avx512::product(x.as_ptr(), m, w, out.as_mut_ptr()),
            _ => avx2::product(x.as_ptr(), m, w, out.as_mut_ptr()),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; the lengths were checked as above.
    unsafe {
        let _ = t;
        neon::product(x.as_ptr(), m, w, out.as_mut_ptr())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (t, m);
}

/// The patch embedding's product read in place: `out[r, :] = patch(first + r) W + b` for
/// the non-overlapping `ph x pw` patches of `x` (`[b, c, h, w]`), patches in row-major
/// grid order, each patch's values in the kernel's (channel, row, column) order. The same
/// sums in the same order as [`dense`] over the patches copied into rows, without the
/// copy (4.8 MB a clip at 8 frames: ~0.1 ms, and ~8% of the tiny test model's clip).
///
/// Panics when the CPU has no tier with the kernel ([`tier_for`]) or the sizes disagree.
pub fn patch_dense(
    x: &[f32],
    shape: [usize; 4],
    patch: [usize; 2],
    first: usize,
    w: &PackedWeights,
    out: &mut [f32],
) {
    patch_dense_on(Tier::current(), x, shape, patch, first, w, out)
}

/// [`patch_dense`] at `tier`.
pub fn patch_dense_on(
    tier: Tier,
    x: &[f32],
    shape: [usize; 4],
    patch: [usize; 2],
    first: usize,
    w: &PackedWeights,
    out: &mut [f32],
) {
    tier.check();
    let t = tier_for(tier).expect("dense kernels need AVX2+FMA, AVX-512 or NEON");
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
    let g = Grid {
        c,
        ph,
        pw,
        h,
        w: wd,
        gh: h / ph,
        gw: wd / pw,
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has `t`'s features (checked above); every patch read lies in x (the
    // patch numbers were checked against the grid, the grid against x's length), and the
    // kernels write out[..m*n] only.
    unsafe {
        match t {
            Tier::Avx512 => avx512::patch_product(x.as_ptr(), &g, first, m, w, out.as_mut_ptr()),
            _ => avx2::patch_product(x.as_ptr(), &g, first, m, w, out.as_mut_ptr()),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; the patch reads were checked as above.
    unsafe {
        let _ = t;
        neon::patch_product(x.as_ptr(), &g, first, m, w, out.as_mut_ptr())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (t, g, m);
}

/// Where patches lie in a `[b, c, h, w]` image.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) struct Grid {
    c: usize,
    ph: usize,
    pw: usize,
    h: usize,
    w: usize,
    gh: usize,
    gw: usize,
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
impl Grid {
    /// Offset of patch `p`'s first value (channel 0, top-left).
    fn start(&self, p: usize) -> usize {
        let (bi, gy, gx) = (p / (self.gh * self.gw), p / self.gw % self.gh, p % self.gw);
        ((bi * self.c * self.h) + gy * self.ph) * self.w + gx * self.pw
    }

    /// Offset, within a patch, of the run of `pw` values of channel `ci`, patch row `ky`.
    fn run(&self, ci: usize, ky: usize) -> usize {
        (ci * self.h + ky) * self.w
    }
}

/// Every half-panel tile of an `m`-row product by `w`, as the AVX2 and NEON kernels walk
/// it: `f(first_row, rows, half_panel, bias, out, cols)` with `half_panel` and `bias` at the
/// half's first column (panel rows stay [`NR`] apart), `out` at the tile's first result,
/// `rows` <= `mr`, `cols` <= 16. Panel outer, as on AVX-512; within a panel, its two
/// 16-column halves one after the other.
///
/// # Safety
/// `out` must hold `m` rows of `w.width()` values.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(crate) unsafe fn each_half_tile(
    m: usize,
    mr: usize,
    w: &PackedWeights,
    out: *mut f32,
    mut f: impl FnMut(usize, usize, *const f32, *const f32, *mut f32, usize),
) {
    const HALF: usize = NR / 2;
    let (k, n) = (w.k, w.n);
    for p in 0..n.div_ceil(NR) {
        // SAFETY (every `add` below): panel p and its bias lie within the packed weights
        // (n columns padded to whole panels); output offsets stay within m rows of n.
        let panel = unsafe { w.panels.as_ptr().add(p * k * 2) } as *const f32;
        let bias = unsafe { w.bias.as_ptr().add(p * 2) } as *const f32;
        for h in 0..2 {
            let c0 = p * NR + h * HALF;
            if c0 >= n {
                break;
            }
            let cols = (n - c0).min(HALF);
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(mr);
                // SAFETY: as above.
                let (hp, hb, o) =
                    unsafe { (panel.add(h * HALF), bias.add(h * HALF), out.add(r * n + c0)) };
                f(r, rows, hp, hb, o, cols);
                r += rows;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
// Each fn's `# Safety` contract (AVX-512 F present, pointers within the sizes the safe
// wrappers checked) covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
pub(crate) mod avx512 {
    use super::{Grid, PackedWeights, MR, NR};
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
    pub(crate) unsafe fn product(x: *const f32, m: usize, w: &PackedWeights, out: *mut f32) {
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

    /// [`product`] with row `first + r` read as patch `first + r` of the image `x`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn patch_product(
        x: *const f32,
        g: &Grid,
        first: usize,
        m: usize,
        wt: &PackedWeights,
        out: *mut f32,
    ) {
        let n = wt.n;
        each_tile(m, wt, out, |r, rows, panel, bias, c, cols| {
            let at = |i: usize| x.add(g.start(first + r + i));
            by_rows!(
                rows,
                patch_tile(std::array::from_fn(at), g, panel, bias, c, n, cols)
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
                let off = g.run(ci, ky);
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

#[cfg(target_arch = "x86_64")]
// Each fn's `# Safety` contract (AVX2 and FMA present, pointers within the sizes the safe
// wrappers checked) covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
pub(crate) mod avx2 {
    use super::{each_half_tile, Grid, PackedWeights, MR_AVX2, NR};
    use std::arch::x86_64::*;

    /// Columns of one AVX2 tile: half a panel, two 8-lane registers.
    pub(crate) const HALF: usize = NR / 2;

    /// `$tile::<R>(args)` for the `R` (1 to [`MR_AVX2`]) that `$rows` holds.
    macro_rules! by_rows6 {
        ($rows:expr, $tile:ident($($arg:expr),*)) => {
            match $rows {
                6 => $tile::<6>($($arg),*),
                5 => $tile::<5>($($arg),*),
                4 => $tile::<4>($($arg),*),
                3 => $tile::<3>($($arg),*),
                2 => $tile::<2>($($arg),*),
                _ => $tile::<1>($($arg),*),
            }
        };
    }
    pub(crate) use by_rows6;

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn product(x: *const f32, m: usize, w: &PackedWeights, out: *mut f32) {
        let (k, n) = (w.k, w.n);
        each_half_tile(m, MR_AVX2, w, out, |r, rows, panel, bias, c, cols| {
            by_rows6!(rows, tile(x.add(r * k), k, panel, bias, c, n, cols))
        })
    }

    #[target_feature(enable = "avx2,fma")]
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
        let (a0, a1) = (
            [_mm256_loadu_ps(bias); R],
            [_mm256_loadu_ps(bias.add(8)); R],
        );
        accumulate(x, k, w, a0, a1, c, ldc, cols)
    }

    /// `a0`/`a1` (columns 0-7 / 8-15 of `R` rows) plus `R` rows of `k` values (`k`
    /// apart, one broadcast per row and step) times 16 columns of a panel (`k` rows,
    /// [`NR`] apart), stored into `c`: the register tile every AVX2 product here runs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn accumulate<const R: usize>(
        rows: *const f32,
        k: usize,
        panel: *const f32,
        mut a0: [__m256; R],
        mut a1: [__m256; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        for kk in 0..k {
            let p0 = _mm256_loadu_ps(panel.add(kk * NR));
            let p1 = _mm256_loadu_ps(panel.add(kk * NR + 8));
            for r in 0..R {
                let v = _mm256_broadcast_ss(&*rows.add(r * k + kk));
                a0[r] = _mm256_fmadd_ps(v, p0, a0[r]);
                a1[r] = _mm256_fmadd_ps(v, p1, a1[r]);
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }

    /// A tile's `R` rows of `cols` (<= 16) results into `c`, rows `ldc` apart.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn store<const R: usize>(
        a0: &[__m256; R],
        a1: &[__m256; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        if cols == HALF {
            for r in 0..R {
                _mm256_storeu_ps(c.add(r * ldc), a0[r]);
                _mm256_storeu_ps(c.add(r * ldc + 8), a1[r]);
            }
        } else {
            // A ragged last tile (no masked stores before AVX-512): through a buffer.
            let mut buf = [0f32; HALF];
            for r in 0..R {
                _mm256_storeu_ps(buf.as_mut_ptr(), a0[r]);
                _mm256_storeu_ps(buf.as_mut_ptr().add(8), a1[r]);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), c.add(r * ldc), cols);
            }
        }
    }

    /// [`product`] with row `first + r` read as patch `first + r` of the image `x`.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn patch_product(
        x: *const f32,
        g: &Grid,
        first: usize,
        m: usize,
        wt: &PackedWeights,
        out: *mut f32,
    ) {
        let n = wt.n;
        each_half_tile(m, MR_AVX2, wt, out, |r, rows, panel, bias, c, cols| {
            let at = |i: usize| x.add(g.start(first + r + i));
            by_rows6!(
                rows,
                patch_tile(std::array::from_fn(at), g, panel, bias, c, n, cols)
            )
        })
    }

    /// [`tile`] with each row a patch: `c * ph` runs of `pw` contiguous values.
    #[target_feature(enable = "avx2,fma")]
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
        let mut a0 = [_mm256_loadu_ps(bias); R];
        let mut a1 = [_mm256_loadu_ps(bias.add(8)); R];
        let mut kk = 0;
        for ci in 0..g.c {
            for ky in 0..g.ph {
                let off = g.run(ci, ky);
                for kx in 0..g.pw {
                    let w0 = _mm256_loadu_ps(w.add(kk * NR));
                    let w1 = _mm256_loadu_ps(w.add(kk * NR + 8));
                    for r in 0..R {
                        let xv = _mm256_broadcast_ss(&*rows[r].add(off + kx));
                        a0[r] = _mm256_fmadd_ps(xv, w0, a0[r]);
                        a1[r] = _mm256_fmadd_ps(xv, w1, a1[r]);
                    }
                    kk += 1;
                }
            }
        }
        store(&a0, &a1, c, ldc, cols)
    }
}

#[cfg(target_arch = "aarch64")]
// NEON is part of the aarch64 baseline; each fn's contract (pointers within the sizes the
// safe wrappers checked) covers its body.
#[allow(unsafe_op_in_unsafe_fn)]
pub(crate) mod neon {
    use super::{each_half_tile, Grid, PackedWeights, MR_NEON, NR};
    use std::arch::aarch64::*;

    /// Columns of one NEON tile: half a panel, four 4-lane registers.
    pub(crate) const HALF: usize = NR / 2;

    /// `$tile::<R>(args)` for the `R` (1 to [`MR_NEON`]) that `$rows` holds.
    macro_rules! by_rows6 {
        ($rows:expr, $tile:ident($($arg:expr),*)) => {
            match $rows {
                6 => $tile::<6>($($arg),*),
                5 => $tile::<5>($($arg),*),
                4 => $tile::<4>($($arg),*),
                3 => $tile::<3>($($arg),*),
                2 => $tile::<2>($($arg),*),
                _ => $tile::<1>($($arg),*),
            }
        };
    }
    pub(crate) use by_rows6;

    pub(crate) unsafe fn product(x: *const f32, m: usize, w: &PackedWeights, out: *mut f32) {
        let (k, n) = (w.k, w.n);
        each_half_tile(m, MR_NEON, w, out, |r, rows, panel, bias, c, cols| {
            by_rows6!(rows, tile(x.add(r * k), k, panel, bias, c, n, cols))
        })
    }

    /// Four registers of a 16-column bias (or any 16 values).
    #[inline(always)]
    pub(crate) unsafe fn load16(p: *const f32) -> [float32x4_t; 4] {
        [
            vld1q_f32(p),
            vld1q_f32(p.add(4)),
            vld1q_f32(p.add(8)),
            vld1q_f32(p.add(12)),
        ]
    }

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
        accumulate(x, k, w, [load16(bias); R], c, ldc, cols)
    }

    /// `a` (16 columns of `R` rows) plus `R` rows of `k` values (`k` apart) times 16
    /// columns of a panel (`k` rows, [`NR`] apart), stored into `c`.
    #[inline]
    pub(crate) unsafe fn accumulate<const R: usize>(
        rows: *const f32,
        k: usize,
        panel: *const f32,
        mut a: [[float32x4_t; 4]; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        for kk in 0..k {
            let p = load16(panel.add(kk * NR));
            for (r, ar) in a.iter_mut().enumerate() {
                let v = *rows.add(r * k + kk);
                for (aq, pq) in ar.iter_mut().zip(p) {
                    *aq = vfmaq_n_f32(*aq, pq, v);
                }
            }
        }
        store(&a, c, ldc, cols)
    }

    /// A tile's `R` rows of `cols` (<= 16) results into `c`, rows `ldc` apart.
    #[inline]
    pub(crate) unsafe fn store<const R: usize>(
        a: &[[float32x4_t; 4]; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let mut buf = [0f32; HALF];
        for (r, ar) in a.iter().enumerate() {
            let dst = if cols == HALF {
                c.add(r * ldc)
            } else {
                buf.as_mut_ptr()
            };
            for (q, v) in ar.iter().enumerate() {
                vst1q_f32(dst.add(q * 4), *v);
            }
            if cols != HALF {
                std::ptr::copy_nonoverlapping(buf.as_ptr(), c.add(r * ldc), cols);
            }
        }
    }

    /// [`product`] with row `first + r` read as patch `first + r` of the image `x`.
    pub(crate) unsafe fn patch_product(
        x: *const f32,
        g: &Grid,
        first: usize,
        m: usize,
        wt: &PackedWeights,
        out: *mut f32,
    ) {
        let n = wt.n;
        each_half_tile(m, MR_NEON, wt, out, |r, rows, panel, bias, c, cols| {
            let at = |i: usize| x.add(g.start(first + r + i));
            by_rows6!(
                rows,
                patch_tile(std::array::from_fn(at), g, panel, bias, c, n, cols)
            )
        })
    }

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
        let mut a = [load16(bias); R];
        let mut kk = 0;
        for ci in 0..g.c {
            for ky in 0..g.ph {
                let off = g.run(ci, ky);
                for kx in 0..g.pw {
                    let p = load16(w.add(kk * NR));
                    for (ar, row) in a.iter_mut().zip(rows) {
                        let v = *row.add(off + kx);
                        for (aq, pq) in ar.iter_mut().zip(p) {
                            *aq = vfmaq_n_f32(*aq, pq, v);
                        }
                    }
                    kk += 1;
                }
            }
        }
        store(&a, c, ldc, cols)
    }
}

//! Embedding vectors at the edges: the database blob format (f32 little-endian), files
//! given on the command line (raw f32 or NumPy `.npy`), and seeded random galleries for
//! tests, benchmarks and the self-test.

use std::path::Path;

use rand::{Rng, SeedableRng};

/// The blob format lives with the store, which the text-embedding cache shares.
pub use crate::store::{from_blob, to_blob};

#[derive(Debug, thiserror::Error)]
pub enum VectorFileError {
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
}

/// Largest embedding file read: 8192 float64 values and a `.npy` header fit well inside.
pub const MAX_VECTOR_FILE_BYTES: u64 = 1 << 20;

/// Read an embedding from a `.npy` file (float32 or float64, one row) or from raw
/// little-endian f32 (any other name).
pub fn read_vector_file(path: &Path) -> Result<Vec<f32>, VectorFileError> {
    let bad = |message: String| VectorFileError::Bad {
        path: path.display().to_string(),
        message,
    };
    // An embedding is at most a few KiB; a bigger file is not one (and is not read whole).
    let bytes =
        crate::fsio::read_regular(path, MAX_VECTOR_FILE_BYTES).map_err(|e| bad(e.to_string()))?;
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        let npy =
            npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a .npy file: {e}")))?;
        let shape = npy.shape().to_vec();
        let rows: u64 = shape.iter().rev().skip(1).product();
        if shape.is_empty() || rows != 1 {
            return Err(bad(format!("expected one vector, found shape {shape:?}")));
        }
        let descr = npy.dtype().descr();
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let v: Vec<f32> = match descr {
            "<f4" => npy.into_vec::<f32>().map_err(|e| bad(e.to_string()))?,
            "<f8" => npy
                .into_vec::<f64>()
                .map_err(|e| bad(e.to_string()))?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            other => return Err(bad(format!("dtype {other} is not float32 or float64"))),
        };
        Ok(v)
    } else {
        if bytes.is_empty() || bytes.len() % 4 != 0 {
            return Err(bad(format!(
                "{} bytes is not a whole number of little-endian f32 values",
                bytes.len()
            )));
        }
        Ok(from_blob(&bytes))
    }
}

/// `n` seeded random unit vectors of `dim` dimensions, row-major.
pub fn random_unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for row in v.chunks_exact_mut(dim) {
        nvr_linalg::normalize(row);
    }
    v
}

/// `base` plus seeded uniform noise of amplitude `noise` per component.
pub fn perturbed(base: &[f32], noise: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    base.iter()
        .map(|x| x + rng.random_range(-noise..=noise))
        .collect()
}

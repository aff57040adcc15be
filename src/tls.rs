//! TLS material shared by the web server (`http::tls`) and the MQTT client (`mqtt`): the
//! one crypto provider (rustls with ring) and PEM certificates and keys read from regular
//! files, with errors naming the config key that pointed at them.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{key}: {path}")]
    Read {
        key: String,
        path: String,
        #[source]
        source: crate::fsio::ReadError,
    },
    #[error("{key}: {path}: no PEM certificate in it")]
    NoCertificate { key: String, path: String },
    #[error("{key}: {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey { key: String, path: String },
}

/// ring, as the product asks: it builds static for both musl targets with the C cross
/// compiler already in use (aws-lc-rs needs cmake and more). rustls deprecates ring's
/// provider because it has no post-quantum key exchange: X25519 and the NIST curves
/// remain, which a household's browsers and brokers all speak.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, PemError> {
    crate::fsio::read_regular(path, MAX_PEM_BYTES).map_err(|source| PemError::Read {
        key: key.to_string(),
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in the PEM file `path` (config key `key`); at least one.
pub fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(key, path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(PemError::NoCertificate {
            key: key.to_string(),
            path: path.display().to_string(),
        });
    }
    Ok(chain)
}

/// The private key in the PEM file `path` (config key `key`).
pub fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PemError::NoKey {
        key: key.to_string(),
        path: path.display().to_string(),
    })
}

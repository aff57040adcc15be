//! `[http]`: the API and web page of `nvr-edge run`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub enabled: bool,
    /// Address and port to listen on. Loopback by default; another address is refused at
    /// start while no user exists (`nvr-edge user add`), unless `allow_anonymous_lan`.
    pub bind: String,
    /// Serve a non-loopback address with no users, everyone an admin. For a closed test
    /// network only.
    pub allow_anonymous_lan: bool,
    /// Live MJPEG streams served at once; the next gets 503.
    pub max_streams: u32,
    /// Frames per second a live stream sends (at most the camera's).
    pub stream_fps: f64,
    /// Requests served at once (live streams count while their headers are sent); more
    /// get 503.
    pub max_requests: u32,
    /// How long a browser login lasts (hours); the session cookie expires with it.
    pub session_hours: u32,
    /// Largest request body: an enrolment photo upload (MiB). Other requests take 64 KiB.
    pub max_upload_mb: u32,
    /// The boot self-test's report (`--self-test --report`), shown at `/api/selftest`.
    pub selftest_report: std::path::PathBuf,
    /// HTTPS: the certificate chain (PEM). With `tls_key`; both or neither.
    pub tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "127.0.0.1:8971".into(),
            allow_anonymous_lan: false,
            max_streams: 4,
            stream_fps: 5.0,
            max_requests: 64,
            session_hours: 168,
            max_upload_mb: 8,
            selftest_report: "/run/nvr-edge/selftest.json".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpSection {
    /// Whether the server speaks HTTPS (then session cookies are `Secure`).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The address `bind` names (validated at load).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.bind.parse().ok()
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        p.check(
            "http.bind",
            self.addr().is_some(),
            "must be an address and port, e.g. \"127.0.0.1:8971\" or \"[::]:8971\"",
        );
        p.int("http.max_streams", self.max_streams.into(), 1, 64);
        p.above("http.stream_fps", self.stream_fps, 0.0, 30.0);
        p.int("http.max_requests", self.max_requests.into(), 4, 1024);
        p.int("http.session_hours", self.session_hours.into(), 1, 8760);
        p.int("http.max_upload_mb", self.max_upload_mb.into(), 1, 32);
        p.check(
            "http.selftest_report",
            self.selftest_report.is_absolute(),
            "must be an absolute path (the --report file of the boot self-test)",
        );
        p.check(
            "http.tls_cert",
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert and tls_key go together: set both for HTTPS, or neither",
        );
    }
}

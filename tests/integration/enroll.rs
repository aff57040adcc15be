//! `nvr-edge household enroll` and `identify` on real photos, through the binary and a real
//! database: a member enrolled from one photo is recognised in another and a different man
//! is not; photos with no face or several faces are refused unless told which face; a
//! negative enrolment stops a look-alike from being named; missing models are an error
//! that names the file.

use crate::common;

use common::HouseholdCli;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/photos")
        .join(name)
}

/// The household CLI with the real identity models and `extra` config.
struct Cli(HouseholdCli);

impl std::ops::Deref for Cli {
    type Target = HouseholdCli;
    fn deref(&self) -> &HouseholdCli {
        &self.0
    }
}

impl Cli {
    fn new(extra: &str) -> Self {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/identity");
        Cli(HouseholdCli::new(|dir| {
            format!("[storage]\ndata_dir = {dir:?}\n[identity]\nmodels_dir = {models:?}\n{extra}")
        }))
    }

    fn identify(&self, name: &str) -> Vec<Value> {
        let p = photo(name);
        let v = self.ok(&["identify", "--image", p.to_str().unwrap()]);
        v["faces"].as_array().unwrap().clone()
    }

    fn embeddings(&self) -> u64 {
        let v = self.ok(&["list"]);
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["embeddings"].as_object().unwrap().values())
            .map(|n| n.as_u64().unwrap())
            .sum()
    }
}

#[test]
#[cfg_attr(
    not(nvr_face_embedder),
    ignore = "needs the face embedder: run models/identity/fetch.py"
)]
fn a_member_enrolled_from_one_photo_is_recognised_in_another() {
    let cli = Cli::new("");
    let id = cli.ok(&["add-member", "--name", "Barack", "--role", "resident"])["member_id"].clone();
    let id = id.as_i64().unwrap().to_string();
    let v = cli.ok(&[
        "enroll",
        "--member",
        &id,
        "--image",
        photo("obama.jpg").to_str().unwrap(),
    ]);
    assert!(v["model_id"]
        .as_str()
        .unwrap()
        .starts_with("mobilefacenet:"));
    assert_eq!(v["stored"].as_array().unwrap().len(), 1);

    let faces = cli.identify("obama2.jpg");
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["match"]["outcome"], "match", "{faces:?}");
    assert_eq!(faces[0]["match"]["name"], "Barack");
    let faces = cli.identify("biden.jpg");
    assert_eq!(faces[0]["match"]["outcome"], "no_match", "{faces:?}");
    assert!(cli.identify("rocket.jpg").is_empty());

    // No face, an unreadable file, an unknown member: refused, nothing stored.
    let (code, _, err) = cli.run(&[
        "enroll",
        "--member",
        &id,
        "--image",
        photo("rocket.jpg").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("rocket.jpg: no face found"), "{err}");
    let (code, _, err) = cli.run(&[
        "enroll",
        "--member",
        &id,
        "--image",
        photo("obama2.jpg").to_str().unwrap(),
        "--image",
        photo("NOTICE").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("NOTICE: not a readable image"), "{err}");
    let (code, _, _) = cli.run(&[
        "enroll",
        "--member",
        "999",
        "--image",
        photo("obama2.jpg").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(cli.embeddings(), 1);
}

#[test]
#[cfg_attr(
    not(nvr_face_embedder),
    ignore = "needs the face embedder: run models/identity/fetch.py"
)]
fn a_photo_with_several_faces_needs_to_be_told_which() {
    let cli = Cli::new("");
    // Two real photos side by side: Obama on the left, Biden on the right.
    let (a, b) = (
        image::open(photo("obama2.jpg")).unwrap().to_rgb8(),
        image::open(photo("biden.jpg")).unwrap().to_rgb8(),
    );
    let h = 800;
    let a = image::imageops::resize(
        &a,
        a.width() * h / a.height(),
        h,
        image::imageops::FilterType::Triangle,
    );
    let b = image::imageops::resize(
        &b,
        b.width() * h / b.height(),
        h,
        image::imageops::FilterType::Triangle,
    );
    let mut both = image::RgbImage::new(a.width() + b.width(), h);
    image::imageops::replace(&mut both, &a, 0, 0);
    image::imageops::replace(&mut both, &b, i64::from(a.width()), 0);
    let group = cli.dir.path().join("group.png");
    both.save(&group).unwrap();
    let group = group.to_str().unwrap();

    let joe = cli.ok(&["add-member", "--name", "Joe", "--role", "family"])["member_id"]
        .as_i64()
        .unwrap()
        .to_string();
    let (code, _, err) = cli.run(&["enroll", "--member", &joe, "--image", group]);
    assert_eq!(code, 2);
    assert!(
        err.contains("2 faces; choose one with --face 0..1"),
        "{err}"
    );
    let (code, _, err) = cli.run(&["enroll", "--member", &joe, "--image", group, "--face", "2"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(cli.embeddings(), 0);
    cli.ok(&["enroll", "--member", &joe, "--image", group, "--face", "1"]);
    let faces = cli.identify("biden.jpg");
    assert_eq!(faces[0]["match"]["name"], "Joe", "{faces:?}");
    assert_ne!(cli.identify("obama.jpg")[0]["match"]["outcome"], "match");
}

#[test]
#[cfg_attr(
    not(nvr_face_embedder),
    ignore = "needs the face embedder: run models/identity/fetch.py"
)]
fn a_negative_enrolment_stops_a_look_alike_being_named() {
    // Thresholds so low that anyone "matches" the only member: the look-alike case.
    let cli = Cli::new("[household]\nmatch_threshold = -0.9\nunknown_threshold = -0.95\n");
    let id = cli.ok(&["add-member", "--name", "Barack", "--role", "resident"])["member_id"]
        .as_i64()
        .unwrap()
        .to_string();
    cli.ok(&[
        "enroll",
        "--member",
        &id,
        "--image",
        photo("obama.jpg").to_str().unwrap(),
    ]);
    assert_eq!(cli.identify("biden.jpg")[0]["match"]["outcome"], "match");
    let v = cli.ok(&[
        "enroll",
        "--not",
        &id,
        "--image",
        photo("biden.jpg").to_str().unwrap(),
    ]);
    assert_eq!(v["negative"], true);
    let m = &cli.identify("biden.jpg")[0]["match"];
    assert_eq!(m["outcome"], "excluded", "{m}");
    assert!(m["negative_similarity"].as_f64().unwrap() > m["similarity"].as_f64().unwrap());
    // The member himself is still recognised.
    assert_eq!(cli.identify("obama2.jpg")[0]["match"]["outcome"], "match");
    let list = cli.ok(&["list"]);
    let counts = list["members"][0]["embeddings"].as_object().unwrap();
    assert!(
        counts.keys().any(|k| k.ends_with("(negative)")),
        "{counts:?}"
    );
}

#[test]
fn missing_face_models_are_an_error_naming_the_file() {
    let cli = Cli::new("");
    std::fs::write(
        cli.dir.path().join("c.toml"),
        format!(
            "[storage]\ndata_dir = {:?}\n[identity]\nmodels_dir = {:?}\n",
            cli.dir.path(),
            cli.dir.path().join("nothing-here")
        ),
    )
    .unwrap();
    cli.ok(&["add-member", "--name", "A", "--role", "resident"]);
    let (code, _, err) = cli.run(&[
        "enroll",
        "--member",
        "1",
        "--image",
        photo("obama.jpg").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing-here/mobilefacenet.onnx"), "{err}");
    assert!(err.contains("models/identity/fetch.py"), "{err}");
}

//! `nvr-edge household ...` end to end through the binary and a real database file:
//! JSON out, bad input refused with status 2 and the database unchanged.

use crate::common;

use std::path::Path;

use common::HouseholdCli;

use nvr_edge::household::vectors::{perturbed, random_unit_vectors, to_blob};

/// The household CLI on a database of its own.
struct Env(HouseholdCli);

impl std::ops::Deref for Env {
    type Target = HouseholdCli;
    fn deref(&self) -> &HouseholdCli {
        &self.0
    }
}

impl Env {
    fn new() -> Self {
        Env(HouseholdCli::new(|dir| {
            format!("[storage]\ndata_dir = {:?}\n", dir.join("data"))
        }))
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }
}

/// A minimal NumPy v1.0 file of float32 with the given shape.
fn npy(v: &[f32], shape: &str) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&to_blob(v));
    out
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn enrol_and_match_through_the_cli() {
    let env = Env::new();
    let v = random_unit_vectors(3, 512, 1);
    let mut ids = Vec::new();
    for (i, name) in ["Ada", "Grace", "Linus"].iter().enumerate() {
        let id = env.ok(&[
            "add-member",
            "--name",
            name,
            "--role",
            "family",
            "--schedule",
            "daily 07:00-23:00",
        ])["member_id"]
            .as_i64()
            .unwrap();
        let f = if i == 0 {
            env.file("ada.npy", &npy(&v[..512], "(512,)"))
        } else {
            env.file(&format!("{name}.f32"), &to_blob(&v[i * 512..(i + 1) * 512]))
        };
        let r = env.ok(&[
            "add-embedding",
            "--member",
            &id.to_string(),
            "--model-id",
            "m1",
            "--file",
            &f,
        ]);
        assert_eq!(r["dim"], 512);
        ids.push(id);
    }
    assert!(exists(&env.dir.path().join("data/nvr-edge.db")));
    let probe = env.file(
        "probe.npy",
        &npy(&perturbed(&v[512..1024], 0.01, 5), "(1, 512)"),
    );
    let m = env.ok(&[
        "match",
        "--model-id",
        "m1",
        "--file",
        &probe,
        "--top-k",
        "2",
    ]);
    assert_eq!(m["outcome"], "match", "{m}");
    assert_eq!(m["member_id"], ids[1]);
    assert_eq!(m["name"], "Grace");
    assert_eq!(m["role"], "family");
    assert_eq!(m["top_k"].as_array().unwrap().len(), 2);
    let other = env.ok(&["match", "--model-id", "m2", "--file", &probe]);
    assert_eq!(other["outcome"], "unavailable_reenroll", "{other}");

    let car = env.ok(&[
        "add-vehicle",
        "--plate",
        "AB12 CDE",
        "--description",
        "family car",
    ]);
    assert!(car["vehicle_id"].as_i64().is_some());
    let seen = env.ok(&["match-vehicle", "--plate", "ab-12-cde"]);
    assert_eq!(seen["kind"], "license_plate", "{seen}");
    let fuzzy = env.ok(&["match-vehicle", "--plate", "A812CDE"]);
    assert_eq!(fuzzy["kind"], "license_plate_fuzzy", "{fuzzy}");

    let list = env.ok(&["list"]);
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
    assert_eq!(list["members"][0]["embeddings"]["m1"], 1);
    assert_eq!(list["vehicles"][0]["plate"], "AB12 CDE");

    env.ok(&["remove", "--member", &ids[0].to_string()]);
    assert_eq!(env.ok(&["list"])["members"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_exits_2_and_leaves_the_database_unchanged() {
    let env = Env::new();
    let id = env.ok(&["add-member", "--name", "Ada", "--role", "resident"])["member_id"]
        .as_i64()
        .unwrap()
        .to_string();
    let good = env.file("good.f32", &to_blob(&random_unit_vectors(1, 128, 2)));
    env.ok(&[
        "add-embedding",
        "--member",
        &id,
        "--model-id",
        "m",
        "--file",
        &good,
    ]);
    let before = env.ok(&["list"]);

    let nan = env.file("nan.f32", &to_blob(&[1.0, f32::NAN, 0.5]));
    let ragged = env.file("ragged.f32", &[0u8, 1, 2, 3, 4]);
    let matrix = env.file("m.npy", &npy(&random_unit_vectors(2, 4, 1), "(2, 4)"));
    let notnpy = env.file("x.npy", b"definitely not numpy");
    // Once read whole before it was refused (4.2 GB resident for a 2 GB file).
    let huge = env.file("huge.f32", &vec![0u8; (1 << 20) + 4]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["add-member", "--name", "Bob", "--role", "burglar"],
            "role",
        ),
        (
            vec!["add-member", "--name", "  ", "--role", "family"],
            "name",
        ),
        (
            vec![
                "add-member",
                "--name",
                "Bob",
                "--role",
                "family",
                "--schedule",
                "sometimes",
            ],
            "schedule",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                &nan,
            ],
            "finite",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                &ragged,
            ],
            "ragged.f32",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                &matrix,
            ],
            "shape",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                &notnpy,
            ],
            "x.npy",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                &huge,
            ],
            "over the 1048576-byte limit",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                "m",
                "--file",
                "/nonexistent.f32",
            ],
            "nonexistent",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                "424242",
                "--model-id",
                "m",
                "--file",
                &good,
            ],
            "424242",
        ),
        (
            vec![
                "add-embedding",
                "--member",
                &id,
                "--model-id",
                " ",
                "--file",
                &good,
            ],
            "model id",
        ),
        (vec!["remove", "--member", "424242"], "424242"),
        (
            vec!["add-vehicle", "--description", "no plate, no embedding"],
            "plate",
        ),
        (vec!["add-vehicle", "--plate=--- ..."], "plate"),
        (vec!["remove-vehicle", "--vehicle", "5"], "vehicle"),
        (vec!["match-vehicle"], "--plate"),
    ];
    for (args, says) in cases {
        let (code, _, err) = env.run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(says),
            "{args:?}: {err:?} should mention {says}"
        );
    }
    assert_eq!(env.ok(&["list"]), before);
}

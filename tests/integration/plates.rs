//! Licence plates with the real PP-OCRv4 models (committed, Apache-2.0): rendered pictures
//! of a car's rear are read and the plates matched against registered vehicles, exactly and
//! with one OCR confusion; a picture without text reads nothing; both graphs agree with
//! onnxruntime's reads of the same pictures.

use std::path::PathBuf;
use std::sync::Arc;

use nvr_edge::clock::SystemClock;
use nvr_edge::config::HouseholdSection;
use nvr_edge::household::{Household, NewVehicle, VehicleMatch, VehicleMatchKind, VehicleProbe};
use nvr_edge::inference::identity::plates::PlateReader;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn picture(rel: &str) -> image::RgbImage {
    image::open(root().join(rel)).unwrap().to_rgb8()
}

fn reader() -> PlateReader {
    PlateReader::load(&root().join("models/identity")).unwrap()
}

#[test]
fn a_rendered_plate_is_read() {
    let r = reader();
    for (file, want) in [
        ("tests/data/plates/car_AB123CD.png", "AB123CD"),
        ("tests/data/plates/car_XY987ZW.png", "XY987ZW"),
    ] {
        let reads = r.read(&picture(file)).unwrap();
        let plates: Vec<String> = reads.iter().filter_map(|t| t.plate()).collect();
        assert_eq!(plates, [want], "{file}: {reads:?}");
        let t = &reads[0];
        // The plate sits at (220..452, 300..354) in the picture.
        assert!(
            t.bbox[0] >= 200.0 && t.bbox[2] <= 470.0 && t.bbox[1] >= 285.0 && t.bbox[3] <= 370.0,
            "{t:?}"
        );
        assert!(t.confidence > 0.7, "{t:?}");
    }
    // No text: no reads.
    assert!(r
        .read(&picture("tests/data/photos/chelsea.png"))
        .unwrap()
        .is_empty());
}

#[test]
fn plates_that_are_not_plates_are_not_taken_for_plates() {
    use nvr_edge::inference::identity::plates::TextRead;
    let read = |text: &str| TextRead {
        bbox: [0.0; 4],
        text: text.into(),
        confidence: 0.9,
    };
    assert_eq!(read("AB 123 CD").plate().as_deref(), Some("AB123CD"));
    assert_eq!(read("xy-987-zw").plate().as_deref(), Some("XY987ZW"));
    assert_eq!(read("STOP").plate(), None, "no digit");
    assert_eq!(read("12").plate(), None, "too short");
    assert_eq!(read("街道 12345").plate(), None, "not plate characters");
}

#[test]
fn a_read_plate_matches_its_registered_vehicle_exactly_and_with_one_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let h = Household::open_in(
        dir.path(),
        HouseholdSection::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let car = h
        .add_vehicle(&NewVehicle {
            description: "red hatchback".into(),
            plate: Some("AB-123-CD".into()),
            trusted: true,
            ..NewVehicle::default()
        })
        .unwrap();
    // Registered with a 2 where the plate reads Z: one OCR confusion.
    let van = h
        .add_vehicle(&NewVehicle {
            description: "van".into(),
            plate: Some("XY 987 2W".into()),
            trusted: true,
            ..NewVehicle::default()
        })
        .unwrap();
    let r = reader();
    let plate = |file: &str| {
        r.read(&picture(file))
            .unwrap()
            .iter()
            .find_map(|t| t.plate())
            .unwrap()
    };
    let m = |p: &str| {
        h.match_vehicle(VehicleProbe {
            plate: Some(p),
            ..VehicleProbe::default()
        })
    };
    match m(&plate("tests/data/plates/car_AB123CD.png")) {
        VehicleMatch::Match {
            vehicle_id, kind, ..
        } => {
            assert_eq!((vehicle_id, kind), (car, VehicleMatchKind::LicensePlate))
        }
        other => panic!("{other:?}"),
    }
    match m(&plate("tests/data/plates/car_XY987ZW.png")) {
        VehicleMatch::Match {
            vehicle_id,
            kind,
            distance,
            ..
        } => assert_eq!(
            (vehicle_id, kind, distance),
            (van, VehicleMatchKind::LicensePlateFuzzy, Some(0))
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_or_wrong_ocr_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = PlateReader::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("ppocr_det.onnx"), "{err}");
    // The recogniser with a character list of the wrong length.
    let src = root().join("models/identity");
    for f in ["ppocr_det.onnx", "ppocr_rec.onnx"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("ppocr_keys.txt"), "A\nB\n").unwrap();
    let err = PlateReader::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("ppocr_keys.txt") && err.contains("2 characters"),
        "{err}"
    );
    // Not ONNX at all.
    std::fs::write(dir.path().join("ppocr_det.onnx"), b"not a model").unwrap();
    let err = PlateReader::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("ppocr_det.onnx") && err.contains("not a loadable ONNX model"),
        "{err}"
    );
}

fn fixture(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(root().join("models/identity/fixtures").join(name)).unwrap();
    npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
}

#[test]
fn both_ocr_graphs_agree_with_onnxruntime() {
    let r = reader();
    let seeded = |n: usize| -> Vec<f32> {
        nvr_edge::inference::xclip::seeded_values(77, n)
            .into_iter()
            .map(|v| v * 0.5)
            .collect()
    };
    for (got, want, what) in [
        (
            r.raw_det(&seeded(3 * 480 * 640)).unwrap(),
            fixture("ppocr_det_seed77.npy"),
            "det",
        ),
        (
            r.raw_rec(&seeded(3 * 48 * 320)).unwrap(),
            fixture("ppocr_rec_seed77.npy"),
            "rec",
        ),
    ] {
        // The fixtures keep every 97th value.
        let got: Vec<f32> = got.into_iter().step_by(97).collect();
        assert_eq!(got.len(), want.len(), "{what}");
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // Probabilities (sigmoid map, softmax over 6625 classes).
        assert!(
            diff < 1e-3,
            "{what}: tract vs onnxruntime max abs diff {diff}"
        );
    }
}

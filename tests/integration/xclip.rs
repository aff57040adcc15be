//! X-CLIP through tract on the committed tiny model (random weights, exported by
//! models/export_xclip.py): tokenizer and graph parity with the PyTorch fixtures,
//! preprocessing parity with the Python processor, request isolation under concurrency,
//! bounded-queue policies, and every kind of bad input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nvr_edge::inference::onnx::GraphThreads;
use nvr_edge::inference::xclip::seeded_values;
use nvr_edge::inference::xclip::text_cache::prompt_embeddings;
use nvr_edge::inference::xclip::tokenizer::CONTEXT;
use nvr_edge::inference::{
    ClipRequest, ClipTokenizer, Preprocessor, PromptSet, ServiceConfig, WhenFull, XclipError,
    XclipModel, XclipService,
};
use nvr_edge::ring::{FrameBatch, FrameFormat, FrameMeta};
use serde_json::Value;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/xclip-tiny")
}

fn fixture(name: &str) -> PathBuf {
    tiny().join("fixtures").join(name)
}

fn npy_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tokens_fixture() -> (Vec<String>, Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokens.json")).unwrap()).unwrap();
    let strings = |k: &str| -> Vec<Vec<i64>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect()
    };
    let prompts = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (prompts, strings("input_ids"), strings("attention_mask"))
}

#[test]
fn tokenizer_matches_hugging_face_for_the_default_prompts() {
    let (prompts, ids, masks) = tokens_fixture();
    assert_eq!(
        prompts,
        nvr_edge::config::Config::embedded()
            .unwrap()
            .xclip
            .categories
            .iter()
            .flat_map(|c| c.prompts.clone())
            .collect::<Vec<_>>()
    );
    let enc = ClipTokenizer::new().encode(&prompts);
    for (p, prompt) in prompts.iter().enumerate() {
        let row = &enc.input_ids[p * CONTEXT..(p + 1) * CONTEXT];
        let mask = &enc.attention_mask[p * CONTEXT..(p + 1) * CONTEXT];
        assert_eq!(mask, &masks[p][..], "{prompt}: mask");
        let n = mask.iter().filter(|&&m| m == 1).count();
        // HF pads with <|endoftext|>, we pad with 0; the ids the model reads agree.
        assert_eq!(&row[..n], &ids[p][..n], "{prompt}: ids");
    }
    // NFC: a decomposed "é" tokenizes like the composed one.
    let a = ClipTokenizer::new().encode(&["caf\u{e9}"]);
    let b = ClipTokenizer::new().encode(&["cafe\u{301}"]);
    assert_eq!(a, b);
    let long = "a person ".repeat(100);
    assert_eq!(ClipTokenizer::new().encode(&[long]).truncated, 1);
}

#[test]
fn text_and_video_graphs_match_pytorch() {
    let model = XclipModel::load(Some(&tiny())).unwrap();
    assert!(
        model.info.placeholder,
        "the committed tiny model has random weights"
    );
    let (prompts, _, _) = tokens_fixture();
    let te = model
        .text_embeddings(&ClipTokenizer::new().encode(&prompts))
        .unwrap();
    let d_text = max_abs_diff(&te, &npy_f32("text_embeds.npy"));
    assert!(d_text <= 1e-4, "text embeddings differ by {d_text}");
    let m = &model.manifest;
    let px = seeded_values(1234, m.num_frames * 3 * m.image_size * m.image_size);
    let want = npy_f32("video_logits_seed1234.npy");
    // Video graph alone, on PyTorch's text embeddings ...
    let logits = model.logits(&px, &npy_f32("text_embeds.npy")).unwrap();
    let d_video = max_abs_diff(&logits, &want);
    assert!(d_video <= 1e-4, "video logits differ by {d_video}");
    // ... and end to end, tract text -> tract video.
    let e2e = model.logits(&px, &te).unwrap();
    let d_e2e = max_abs_diff(&e2e, &want);
    assert!(d_e2e <= 1e-4, "end-to-end logits differ by {d_e2e}");
    eprintln!("parity: text {d_text:e}, video {d_video:e}, end to end {d_e2e:e}");
}

/// The graph on two threads (run on the pool's own thread, its big ops split) gives the
/// same bits as on one: each output element is computed by one thread in the same order.
#[test]
fn two_threads_give_the_same_logits_as_one() {
    let model = XclipModel::load(None).unwrap();
    let m = &model.manifest;
    let px = seeded_values(77, m.num_frames * 3 * m.image_size * m.image_size);
    let te: Vec<f32> = seeded_values(78, 5 * m.embed_dim)
        .iter()
        .map(|x| x * 0.1)
        .collect();
    let on = |threads: usize| {
        GraphThreads::new(threads).run(|| {
            let name = std::thread::current().name().map(String::from);
            (model.logits(&px, &te).unwrap(), name)
        })
    };
    let (one, _) = on(1);
    let (two, thread) = on(2);
    assert!(
        thread
            .as_deref()
            .is_some_and(|n| n.starts_with("nvr-graph")),
        "ran on {thread:?}, not on the pool"
    );
    assert_eq!(
        one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        two.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn builtin_model_is_the_committed_tiny_model() {
    let builtin = XclipModel::load(None).unwrap();
    let dir = XclipModel::load(Some(&tiny())).unwrap();
    assert_eq!(builtin.info.text_sha256, dir.info.text_sha256);
    assert_eq!(builtin.info.video_sha256, dir.info.video_sha256);
    assert_eq!(builtin.info.source, "built-in");
    assert!(builtin.info.describe().contains("PLACEHOLDER"));
}

fn preprocess_reference(kind: &str) -> (Vec<f32>, usize) {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("preprocess.json")).unwrap())
            .unwrap();
    let stride = v[kind]["stride"].as_u64().unwrap() as usize;
    (npy_f32(&format!("preprocess_{kind}_stride97.npy")), stride)
}

fn compare_preprocess(kind: &str, frames: Vec<Vec<f32>>) -> f32 {
    let (want, stride) = preprocess_reference(kind);
    let per = want.len() / 3;
    let mut worst = 0f32;
    for (k, f) in frames.iter().enumerate() {
        let got: Vec<f32> = f.iter().step_by(stride).copied().collect();
        worst = worst.max(max_abs_diff(&got, &want[k * per..(k + 1) * per]));
    }
    worst
}

#[test]
fn preprocessing_matches_the_reference_processor() {
    let model = XclipModel::load(Some(&tiny())).unwrap();
    let mut pre = Preprocessor::new(model.manifest.preprocess.clone()).unwrap();
    // Lossless frames: both sides decode identically, so this isolates resize/crop/normalise.
    let png: Vec<Vec<f32>> = (0..3)
        .map(|k| {
            let img = image::open(fixture(&format!("frame{k}.png")))
                .unwrap()
                .to_rgb8();
            let mut out = vec![0f32; pre.frame_len()];
            pre.rgb_into(img.as_raw(), img.width(), img.height(), &mut out);
            out
        })
        .collect();
    let d_png = compare_preprocess("png", png);
    // One 8-bit level after normalisation is 1/255/std ~= 0.015; we demand far less.
    assert!(d_png <= 1e-4, "PNG frames: max abs diff {d_png}");
    // JPEG frames through the whole path (decoders may differ by a level here and there).
    let jpg: Vec<Vec<f32>> = (0..3)
        .map(|k| {
            let bytes = std::fs::read(fixture(&format!("frame{k}.jpg"))).unwrap();
            let mut out = Vec::new();
            pre.clip([bytes.as_slice()], 1, &mut out).unwrap();
            out
        })
        .collect();
    let d_jpg = compare_preprocess("jpg", jpg);
    assert!(d_jpg <= 0.1, "JPEG frames: max abs diff {d_jpg}");
    eprintln!("preprocess parity: png {d_png:e}, jpeg {d_jpg:e}");
}

fn jpeg_frames(n: usize, seed: u64) -> FrameBatch {
    // Frames of the synthetic camera at different moments: distinct clips.
    let cfg = nvr_edge::config::Config::from_toml_str(
        "[[cameras]]\nid = \"x\"\nsource = \"synthetic\"\nwidth = 320\nheight = 240\nfps = 30",
        "t",
    )
    .unwrap();
    let mut src = nvr_edge::capture::open_source(
        &cfg.cameras[0],
        Arc::new(nvr_edge::clock::SystemClock),
        false,
    )
    .unwrap();
    let mut buf = Vec::new();
    for _ in 0..seed * 7 {
        src.next_frame(&mut buf).unwrap();
    }
    let mut b = FrameBatch::default();
    for _ in 0..n {
        let c = src.next_frame(&mut buf).unwrap();
        b.push(c.meta, &buf);
    }
    b
}

fn service(queue: usize, when_full: WhenFull, workers: usize) -> XclipService {
    service_on(queue, when_full, workers, 1)
}

fn service_on(queue: usize, when_full: WhenFull, workers: usize, threads: usize) -> XclipService {
    let model = Arc::new(XclipModel::load(None).unwrap());
    let prompts = PromptSet::new(
        nvr_edge::config::Config::embedded()
            .unwrap()
            .xclip
            .categories,
    );
    let (e, _) =
        prompt_embeddings(&model, &ClipTokenizer::new(), &prompts.prompts, None, 0).unwrap();
    XclipService::start(
        model,
        Arc::new(prompts),
        Arc::new(e),
        ServiceConfig {
            workers,
            queue,
            when_full,
            top_k: 3,
            threads,
        },
    )
    .unwrap()
}

#[test]
fn ten_concurrent_clips_get_exactly_their_own_results() {
    let svc = service(16, WhenFull::Refuse, 2);
    let clips: Vec<FrameBatch> = (0..10).map(|i| jpeg_frames(8, i)).collect();
    let alone: Vec<_> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| {
            svc.classify(ClipRequest {
                camera: format!("c{i}"),
                frames: c.clone(),
            })
            .unwrap()
        })
        .collect();
    // Distinct inputs give distinct outputs, so a mix-up would show.
    assert!(alone
        .windows(2)
        .any(|w| w[0].classification.all_scores != w[1].classification.all_scores));
    let handles: Vec<_> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = svc
                .submit(ClipRequest {
                    camera: format!("c{i}"),
                    frames: c.clone(),
                })
                .unwrap();
            (i, t)
        })
        .collect();
    for (i, t) in handles {
        let r = t.wait().unwrap();
        assert_eq!(r.camera, format!("c{i}"));
        assert_eq!(
            r.classification.all_scores, alone[i].classification.all_scores,
            "clip {i}"
        );
        assert!(r.placeholder_model);
    }
    let st = svc.stats();
    assert_eq!((st.failed, st.refused, st.replaced), (0, 0, 0));
    // Two workers on two graph threads each (four pool threads and their spinning helpers
    // on this 2-core machine): the same results.
    let svc = service_on(16, WhenFull::Refuse, 2, 2);
    let handles: Vec<_> = clips
        .iter()
        .map(|c| {
            svc.submit(ClipRequest {
                camera: "c".into(),
                frames: c.clone(),
            })
            .unwrap()
        })
        .collect();
    for (i, t) in handles.into_iter().enumerate() {
        let r = t.wait().unwrap();
        assert_eq!(
            r.classification.all_scores, alone[i].classification.all_scores,
            "clip {i} on 2 threads"
        );
    }
}

#[test]
fn burst_of_20_completes() {
    let svc = service(20, WhenFull::Refuse, 2);
    let clip = jpeg_frames(8, 3);
    let t0 = std::time::Instant::now();
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            svc.submit(ClipRequest {
                camera: format!("b{i}"),
                frames: clip.clone(),
            })
            .unwrap()
        })
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
    eprintln!(
        "burst of 20: {:.1} clips/s",
        20.0 / t0.elapsed().as_secs_f64()
    );
    assert_eq!(svc.stats().completed, 20);
}

#[test]
fn a_full_queue_refuses_or_replaces_the_same_cameras_oldest() {
    let clip = jpeg_frames(8, 1);
    let svc = service(1, WhenFull::Refuse, 1);
    let mut accepted = Vec::new();
    let mut busy = 0;
    for i in 0..6 {
        match svc.submit(ClipRequest {
            camera: "a".into(),
            frames: clip.clone(),
        }) {
            Ok(t) => accepted.push(t),
            Err(XclipError::Busy) => busy += 1,
            Err(e) => panic!("{i}: {e}"),
        }
    }
    assert!(
        busy >= 1,
        "a queue of 1 behind one worker cannot take 6 at once"
    );
    assert_eq!(svc.stats().refused, busy);
    for t in accepted {
        t.wait().unwrap();
    }

    let svc = service(1, WhenFull::ReplaceOldest, 1);
    let tickets: Vec<_> = (0..6)
        .map(|_| {
            svc.submit(ClipRequest {
                camera: "a".into(),
                frames: clip.clone(),
            })
        })
        .collect();
    // Another camera cannot push camera "a"'s clip out: refused.
    let other = svc.submit(ClipRequest {
        camera: "b".into(),
        frames: clip.clone(),
    });
    let outcomes: Vec<_> = tickets.into_iter().map(|t| t.unwrap().wait()).collect();
    let replaced = outcomes
        .iter()
        .filter(|r| matches!(r, Err(XclipError::Replaced)))
        .count();
    assert!(replaced >= 1, "{outcomes:?}");
    assert!(
        outcomes.last().unwrap().is_ok(),
        "the newest clip is the one kept"
    );
    assert_eq!(svc.stats().replaced as usize, replaced);
    if let Err(e) = other {
        assert!(matches!(e, XclipError::Busy));
    }
}

#[test]
fn bad_clips_fail_alone_and_corrupt_frames_are_counted() {
    let svc = service(8, WhenFull::Refuse, 1);
    let good = jpeg_frames(8, 2);
    let mut mixed = FrameBatch::default();
    let meta = FrameMeta {
        seq: 0,
        ts_us: 0,
        width: 0,
        height: 0,
        format: FrameFormat::Jpeg,
    };
    for (i, (m, b)) in good.iter().enumerate() {
        if i % 3 == 0 {
            mixed.push(*m, &b[..b.len() / 3]); // truncated JPEG
        } else {
            mixed.push(*m, b);
        }
    }
    let mut garbage = FrameBatch::default();
    garbage.push(meta, b"not a jpeg");
    garbage.push(meta, &[0xFF, 0xD8, 0xFF]);
    let t_mixed = svc
        .submit(ClipRequest {
            camera: "m".into(),
            frames: mixed,
        })
        .unwrap();
    let t_garbage = svc
        .submit(ClipRequest {
            camera: "g".into(),
            frames: garbage,
        })
        .unwrap();
    let t_empty = svc
        .submit(ClipRequest {
            camera: "e".into(),
            frames: FrameBatch::default(),
        })
        .unwrap();
    let t_good = svc
        .submit(ClipRequest {
            camera: "ok".into(),
            frames: good,
        })
        .unwrap();
    let r = t_mixed.wait().unwrap();
    assert_eq!((r.frames.frames_in, r.frames.bad_frames), (8, 3));
    assert!(matches!(t_garbage.wait(), Err(XclipError::Preprocess(_))));
    assert!(matches!(t_empty.wait(), Err(XclipError::BadRequest(_))));
    assert!(t_good.wait().is_ok());
    let st = svc.stats();
    assert_eq!((st.completed, st.failed), (2, 2));
}

#[test]
fn loading_errors_name_the_file_and_the_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let copy =
        |from: &str, to: &str| std::fs::copy(tiny().join(from), dir.path().join(to)).unwrap();
    let err = |d: &Path| {
        XclipModel::load(Some(d))
            .err()
            .expect("must fail")
            .to_string()
    };

    let e = err(&dir.path().join("nope"));
    assert!(e.contains("nope") && e.contains("manifest.json"), "{e}");

    copy("manifest.json", "manifest.json");
    let e = err(dir.path());
    assert!(e.contains("xclip_text.onnx"), "{e}");

    std::fs::write(dir.path().join("xclip_text.onnx"), b"this is not ONNX").unwrap();
    copy("xclip_video.onnx", "xclip_video.onnx");
    let e = err(dir.path());
    assert!(
        e.contains("xclip_text.onnx") && e.contains("not a loadable ONNX model"),
        "{e}"
    );

    // The graphs swapped: wrong input names and shapes.
    copy("xclip_video.onnx", "xclip_text.onnx");
    let e = err(dir.path());
    assert!(
        e.contains("xclip_text.onnx") && e.contains("pixel_values") && e.contains("input_ids"),
        "{e}"
    );

    copy("xclip_text.onnx", "xclip_text.onnx");
    copy("xclip_text.onnx", "xclip_video.onnx");
    let e = err(dir.path());
    assert!(
        e.contains("xclip_video.onnx") && e.contains("expected \"pixel_values\""),
        "{e}"
    );

    // A manifest that promises another frame count than the graph has.
    copy("xclip_video.onnx", "xclip_video.onnx");
    let m = std::fs::read_to_string(tiny().join("manifest.json"))
        .unwrap()
        .replace("\"num_frames\": 8", "\"num_frames\": 16");
    std::fs::write(dir.path().join("manifest.json"), m).unwrap();
    let e = err(dir.path());
    assert!(e.contains("xclip_video.onnx") && e.contains("16"), "{e}");

    std::fs::write(dir.path().join("manifest.json"), "{").unwrap();
    let e = err(dir.path());
    assert!(e.contains("manifest.json"), "{e}");
}

#[test]
fn text_embeddings_are_cached_per_model_and_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let conn = nvr_edge::store::open_in(dir.path()).unwrap();
    let model = XclipModel::load(None).unwrap();
    let tok = ClipTokenizer::new();
    let prompts: Vec<String> = vec!["a person loitering".into(), "a person walking by".into()];
    let (a, s1) = prompt_embeddings(&model, &tok, &prompts, Some(&conn), 1).unwrap();
    assert_eq!((s1.cached, s1.computed), (0, 2));
    let more = vec![
        prompts[1].clone(),
        "a person running away".into(),
        prompts[0].clone(),
    ];
    let (b, s2) = prompt_embeddings(&model, &tok, &more, Some(&conn), 2).unwrap();
    assert_eq!((s2.cached, s2.computed), (2, 1));
    let d = model.manifest.embed_dim;
    assert_eq!(&b[..d], &a[d..2 * d]);
    assert_eq!(&b[2 * d..], &a[..d]);
    // After a reopen too.
    drop(conn);
    let conn = nvr_edge::store::open_in(dir.path()).unwrap();
    let (_, s3) = prompt_embeddings(&model, &tok, &more, Some(&conn), 3).unwrap();
    assert_eq!((s3.cached, s3.computed), (3, 0));
}

#[test]
fn classify_cli_prints_the_result_with_raw_logits() {
    let frames: Vec<String> = (0..3)
        .map(|k| fixture(&format!("frame{k}.jpg")).display().to_string())
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .arg("classify")
        .arg("--frames")
        .args(&frames)
        .args(["--top-k", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["result"];
    assert!(r["detected_action"].is_string(), "{v}");
    assert!(r["confidence"].as_f64().unwrap() > 0.0);
    assert_eq!(r["top_k"].as_array().unwrap().len(), 2);
    let all = r["all_scores"].as_array().unwrap();
    assert_eq!(all.len(), 19);
    assert!(all
        .iter()
        .all(|s| s["logit"].is_number() && s["probability"].is_number()));
    assert_eq!(v["model"]["placeholder"], true);
    assert_eq!(r["frames"]["frames_in"], 3);

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
        .args(["classify", "--frames", "/nonexistent.jpg"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.jpg"));

    // A pixel bomb (a real frame whose header claims 65500x65500) is refused from its
    // header, before anything is decoded; /dev/zero is refused as not a file.
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = std::fs::read(fixture("frame0.jpg")).unwrap();
    let at = bomb
        .windows(2)
        .position(|m| m[0] == 0xFF && (m[1] == 0xC0 || m[1] == 0xC2))
        .unwrap();
    bomb[at + 5..at + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    let bomb_path = dir.path().join("bomb.jpg");
    std::fs::write(&bomb_path, &bomb).unwrap();
    for (frame, want) in [
        (
            bomb_path.display().to_string(),
            "65500x65500 is over the 50000000-pixel limit",
        ),
        ("/dev/zero".to_string(), "not a regular file"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nvr-edge"))
            .args(["classify", "--frames", &frame])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

//! `steepest predict`: probabilities for image files must be the model's own, with the
//! checkpoint's input size and normalisation applied, and bad files reported by name.

mod common;

use common::cli::{assert_clean_error, run_ok, steepest, temp, text};
use image::{GrayImage, ImageFormat};
use steepest::checkpoint;
use steepest::cpu::CpuBackend;
use steepest::data;

#[test]
fn predict_matches_the_model_and_names_bad_files() {
    let dir = temp("predict");
    let ckpt = dir.join("model.safetensors");
    // A small CNN with input normalisation, so predict must apply the stored mean and std.
    run_ok(&[
        "train",
        "--epochs",
        "1",
        "--limit-train",
        "2000",
        "--device",
        "cpu",
        "--normalize",
        "auto",
        "--model",
        "conv:4:3,relu,maxpool:2,flatten,linear",
        "--save",
        ckpt.to_str().unwrap(),
    ]);

    // The first test images of the built-in set, written as lossless 28x28 PNGs.
    let set = data::open("synthetic", None).unwrap();
    let size = set.sample_size();
    let n = 6;
    let mut files = Vec::new();
    for i in 0..n {
        let img = GrayImage::from_raw(
            28,
            28,
            set.test.images().unwrap()[i * size..(i + 1) * size].to_vec(),
        )
        .unwrap();
        let path = dir.join(format!("digit {i}.png"));
        img.save_with_format(&path, ImageFormat::Png).unwrap();
        files.push(path.to_str().unwrap().to_string());
    }
    let mut args = vec![
        "predict",
        "--weights",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--top-k",
        "10",
    ];
    args.extend(files.iter().map(|s| s.as_str()));
    let (out, _) = run_ok(&args);
    // One JSON object per line and image.
    let got: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), n);

    // The same pixels through the library on the same backend.
    let loaded = checkpoint::load(&ckpt).unwrap();
    let mut b = CpuBackend::new();
    let (model, described) = loaded.restore(&mut b, &ckpt).unwrap();
    assert_eq!(described.class_names, set.class_names);
    let want = steepest::train::predict(
        &mut b,
        &model,
        &set.test.images().unwrap()[..n * size],
        256,
        steepest::train::Tta::None,
    )
    .unwrap();
    for (i, probs) in want.iter().enumerate() {
        let entry = &got[i];
        assert_eq!(entry["file"], files[i]);
        let top = entry["top"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        for t in top {
            let class = t["index"].as_u64().unwrap() as usize;
            assert_eq!(t["class"], set.class_names[class]);
            let p = t["probability"].as_f64().unwrap() as f32;
            assert!(
                (p - probs[class]).abs() <= 1e-6,
                "image {i} class {class}: {p} vs {}",
                probs[class]
            );
        }
        let ps: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(ps.windows(2).all(|w| w[0] >= w[1]), "most likely first: {ps:?}");
    }

    // Text output: one line per image, top-k classes with percentages.
    let o = steepest(&[
        "predict",
        "--weights",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        "--top-k",
        "2",
        &files[0],
    ]);
    let (out, _) = text(&o);
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with(&format!("{}: ", files[0])) && out.matches('%').count() == 2, "{out}");

    // Another size is resized as training data would be; a broken file is named and the run
    // fails, but the good images are still answered.
    let big = dir.join("big.png");
    image::imageops::resize(
        &GrayImage::from_raw(28, 28, set.test.images().unwrap()[..size].to_vec()).unwrap(),
        84,
        84,
        image::imageops::FilterType::Nearest,
    )
    .save(&big)
    .unwrap();
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n not really").unwrap();
    let o = steepest(&[
        "predict",
        "--weights",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        big.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    let (out, _) = text(&o);
    assert!(out.contains("big.png: "), "{out}");
    assert_clean_error(&o, &["broken.png", "1 of 2 images could not be read"]);

    let o = steepest(&[
        "predict",
        "--weights",
        dir.join("missing.safetensors").to_str().unwrap(),
        &files[0],
    ]);
    assert_clean_error(&o, &["missing.safetensors"]);
    let o = steepest(&["predict", "--weights", ckpt.to_str().unwrap()]);
    assert_clean_error(&o, &["at least one image"]);

    // A folder: its image files (nested ones too, sorted), one line each; other files skipped.
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("more")).unwrap();
    std::fs::copy(&files[1], photos.join("b.png")).unwrap();
    std::fs::copy(&files[2], photos.join("more").join("c.PNG")).unwrap();
    std::fs::copy(&files[0], photos.join("a.png")).unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let (out, _) = run_ok(&[
        "predict",
        "--weights",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        photos.to_str().unwrap(),
        &files[3],
    ]);
    let named: Vec<&str> = out.lines().map(|l| l.split(": ").next().unwrap()).collect();
    let want = [
        photos.join("a.png"),
        photos.join("b.png"),
        photos.join("more").join("c.PNG"),
        std::path::PathBuf::from(&files[3]),
    ];
    assert_eq!(named, want.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>(), "{out}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = steepest(&["predict", "--weights", ckpt.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_clean_error(&o, &["no image files"]);
}

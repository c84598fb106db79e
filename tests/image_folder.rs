//! Image folders (`--dataset folder`): layout, decoding and resizing, the seeded validation
//! split, skipped files, background decoding that matches in-memory batches, bad folders, and an
//! end-to-end run on the real ant/bee photos in `../shared/data/hymenoptera` when present.

mod common;

use std::path::Path;

use common::cli::{assert_clean_error, run_ok, steepest, temp};
use image::{ImageFormat, Rgb, RgbImage};
use steepest::data::folder::{self, FolderOptions};
use steepest::data::loader::{Augment, Batcher};

/// A flat colour image.
fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

fn save(img: &RgbImage, path: &Path, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, format).unwrap();
}

/// train/{red,blue} and val/{red,blue}, in four formats and two sizes, plus one corrupt JPEG.
fn fixture(name: &str) -> common::cli::TempDir {
    let dir = temp(name);
    let formats = [
        (ImageFormat::Png, "png"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Gif, "gif"),
        (ImageFormat::Jpeg, "jpg"),
    ];
    for (split, n) in [("train", 8), ("val", 4)] {
        for (class, rgb) in [("red", [250, 10, 10]), ("blue", [10, 10, 250])] {
            for i in 0..n {
                let (format, ext) = formats[i % formats.len()];
                // Most images are 12x8; a few are 30x20 (same aspect ratio) to be resized.
                let (w, h) = if i % 3 == 2 { (30, 20) } else { (12, 8) };
                save(
                    &solid(w, h, rgb),
                    &dir.join(split).join(class).join(format!("{i}.{ext}")),
                    format,
                );
            }
        }
    }
    // A JPEG whose headers are whole but whose image data stops short: it passes the header
    // check and fails when decoded.
    let mut jpeg = Vec::new();
    solid(12, 8, [250, 10, 10])
        .write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(dir.join("train/red/truncated.jpg"), &jpeg[..jpeg.len() - 6]).unwrap();
    // Not an image at all.
    std::fs::write(dir.join("train/blue/notes.txt"), "not an image").unwrap();
    // Hidden files are ignored without a warning.
    std::fs::write(dir.join("train/blue/.DS_Store"), "junk").unwrap();
    dir
}

#[test]
fn decodes_resizes_and_labels_a_class_folder() {
    let dir = fixture("layout");
    let mut notes = Vec::new();
    let data = folder::load_dir(&dir, &FolderOptions::default(), &mut notes).unwrap();
    assert_eq!(data.class_names, ["blue", "red"], "classes are the sorted folder names");
    assert_eq!((data.channels, data.height, data.width), (3, 8, 12), "most common size, RGB");
    assert!(notes.iter().any(|n| n.contains("12x8")), "the chosen size is said: {notes:?}");
    // 16 good training files; the truncated JPEG and notes.txt are skipped and counted.
    assert_eq!(data.train.len, 16);
    assert_eq!(data.test.len, 8);
    assert!(notes.iter().any(|n| n.contains("skipped 2 unreadable files")), "{notes:?}");
    // Every image, whatever its format and size, arrives as its flat colour, channel-major.
    let plane = 8 * 12;
    for split in [&data.train, &data.test] {
        for i in 0..split.len {
            let px = &split.images().unwrap()[i * 3 * plane..(i + 1) * 3 * plane];
            let (r, b) = (px[0] as i32, px[2 * plane] as i32);
            let want = if data.class_names[split.labels[i] as usize] == "red" {
                (250, 10)
            } else {
                (10, 250)
            };
            // JPEG and GIF palettes shift flat colours by a few levels.
            assert!((r - want.0).abs() <= 8 && (b - want.1).abs() <= 8, "sample {i}: r {r} b {b}");
            assert!(px.chunks(plane).all(|c| c.iter().all(|&v| v == c[0])), "flat stays flat");
        }
    }
}

#[test]
fn size_and_colour_can_be_chosen() {
    let dir = fixture("size");
    let opts = FolderOptions { size: Some((5, 7)), channels: Some(1), ..Default::default() };
    let data = folder::load_dir(&dir, &opts, &mut Vec::new()).unwrap();
    assert_eq!((data.channels, data.height, data.width), (1, 7, 5));
    assert_eq!(data.train.images().unwrap().len(), data.train.len * 35);
}

#[test]
fn without_val_folder_a_seeded_stratified_split_is_held_out() {
    let dir = temp("split");
    for class in ["a", "b", "c"] {
        for i in 0..10 {
            save(
                &solid(4, 4, [i * 20, 0, 0]),
                &dir.join(class).join(format!("{i}.png")),
                ImageFormat::Png,
            );
        }
    }
    let opts = FolderOptions { val_split: 0.3, ..Default::default() };
    let load = || {
        let mut notes = Vec::new();
        let d = folder::load_dir(&dir, &opts, &mut notes).unwrap();
        assert!(notes.iter().any(|n| n.contains("--val-split")), "{notes:?}");
        d
    };
    let (a, b) = (load(), load());
    assert_eq!((a.train.len, a.test.len), (21, 9));
    // A class of one image keeps it for training, whatever the fraction.
    let tiny = temp("split-tiny");
    for (class, n) in [("one", 1), ("many", 4)] {
        for i in 0..n {
            let path = tiny.join(class).join(format!("{i}.png"));
            save(&solid(4, 4, [i as u8, 0, 0]), &path, ImageFormat::Png);
        }
    }
    let opts = FolderOptions { val_split: 0.6, ..Default::default() };
    let d = folder::load_dir(&tiny, &opts, &mut Vec::new()).unwrap();
    assert_eq!((d.train.len, d.test.len), (3, 2), "one of 'one' and two of 'many' train");
    for c in 0..3u8 {
        assert_eq!(
            a.test.labels.iter().filter(|&&l| l == c).count(),
            3,
            "3 of each class held out"
        );
    }
    assert_eq!(
        a.test.images().unwrap(),
        b.test.images().unwrap(),
        "the split is the same every time"
    );
    assert_eq!(a.test.labels, b.test.labels);
    // Train and validation do not share an image (each image has its own red level per class).
    let key = |s: &steepest::data::Split, i: usize| (s.labels[i], s.images().unwrap()[i * 48]);
    for i in 0..a.test.len {
        assert!(
            (0..a.train.len).all(|j| key(&a.train, j) != key(&a.test, i)),
            "val sample {i} is also in train"
        );
    }
}

#[test]
fn background_decoding_gives_the_in_memory_batches() {
    let dir = fixture("stream");
    // Drop the files that fail only when decoded fully, so both paths see the same samples.
    std::fs::remove_file(dir.join("train/red/truncated.jpg")).unwrap();
    let memory = folder::load_dir(&dir, &FolderOptions::default(), &mut Vec::new()).unwrap();
    let mut notes = Vec::new();
    let opts = FolderOptions { memory_limit: 0, ..Default::default() };
    let streamed = folder::load_dir(&dir, &opts, &mut notes).unwrap();
    assert!(streamed.train.files().is_some() && streamed.train.images().is_none());
    assert!(notes.iter().any(|n| n.contains("on the fly")), "{notes:?}");
    let shape = [memory.channels, memory.height, memory.width];
    let augment = Augment { crop_pad: 2, flip: true };
    let epochs = |split: &steepest::data::Split| {
        let mut b =
            Batcher::new(split, memory.sample_size(), 5, false).with_augment(augment, 9, shape);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut all = Vec::new();
        for _ in 0..2 {
            b.start_epoch(Some(&mut rng));
            while let Some((px, labels)) = b.next_batch() {
                all.push((px.to_vec(), labels.to_vec()));
            }
        }
        all
    };
    assert_eq!(memory.channel_stats(), streamed.channel_stats(), "--normalize auto agrees");
    let (m, s) = (epochs(&memory.train), epochs(&streamed.train));
    assert_eq!(m.len(), 8, "16 samples in batches of 5, two epochs");
    assert_eq!(m, s, "same pixels, labels and augmentation from both paths");
    // Stopping mid-epoch (dropping the batcher) must not hang on the decoder thread.
    let mut b = Batcher::new(&streamed.train, memory.sample_size(), 2, false);
    b.start_epoch(None);
    assert!(b.next_batch().is_some());
    drop(b);
}

/// `--classes` on a folder streamed from disk keeps the same samples, relabelled the same way,
/// as on the folder decoded into memory.
#[test]
fn a_class_subset_streams_the_samples_it_keeps_in_memory() {
    let dir = fixture("stream-classes");
    std::fs::remove_file(dir.join("train/red/truncated.jpg")).unwrap();
    // A third class, between the two, for the subset to leave out.
    for (split, n) in [("train", 5), ("val", 2)] {
        for i in 0..n {
            let path = dir.join(split).join("green").join(format!("{i}.png"));
            save(&solid(12, 8, [10, 250, 10]), &path, ImageFormat::Png);
        }
    }
    let mut memory = folder::load_dir(&dir, &FolderOptions::default(), &mut Vec::new()).unwrap();
    let opts = FolderOptions { memory_limit: 0, ..Default::default() };
    let mut streamed = folder::load_dir(&dir, &opts, &mut Vec::new()).unwrap();
    assert_eq!(memory.class_names, ["blue", "green", "red"]);
    let before = memory.train.labels.clone();
    // Green left out, and the others in reverse order: red (2) becomes 0, blue (0) becomes 1.
    memory.select_classes("red,blue").unwrap();
    streamed.select_classes("red,blue").unwrap();
    assert!(streamed.train.files().is_some(), "still streamed");
    assert_eq!((memory.train.len, streamed.train.len), (16, 16), "green's 5 are gone");
    let relabelled: Vec<u8> =
        before.iter().filter(|&&l| l != 1).map(|&l| if l == 2 { 0 } else { 1 }).collect();
    assert_eq!(memory.train.labels, relabelled);
    assert_eq!(streamed.train.labels, relabelled);
    let batches = |split: &steepest::data::Split| {
        let mut b = Batcher::new(split, memory.sample_size(), 3, false);
        b.start_epoch(None);
        let mut all = Vec::new();
        while let Some((px, labels)) = b.next_batch() {
            all.push((px.to_vec(), labels.to_vec()));
        }
        all
    };
    let (m, s) = (batches(&memory.train), batches(&streamed.train));
    assert_eq!(m, s, "same pixels and labels from both paths");
}

#[test]
fn a_file_that_fails_while_streaming_is_left_out_of_its_batch() {
    let dir = fixture("stream-fail");
    let opts = FolderOptions { memory_limit: 0, ..Default::default() };
    let data = folder::load_dir(&dir, &opts, &mut Vec::new()).unwrap();
    // The truncated JPEG passes the header check, so it is listed, and fails when decoded.
    assert_eq!(data.train.len, 17);
    let mut b = Batcher::new(&data.train, data.sample_size(), 4, false);
    b.start_epoch(None);
    let mut seen = 0;
    while let Some((px, labels)) = b.next_batch() {
        assert_eq!(px.len(), labels.len() * data.sample_size());
        seen += labels.len();
    }
    assert_eq!(seen, 16);
    assert_eq!(data.train.files().unwrap().failed(), 1);
}

#[test]
fn bad_folders_are_clear_errors() {
    let err = |dir: &Path| {
        folder::load_dir(dir, &FolderOptions::default(), &mut Vec::new()).unwrap_err().to_string()
    };

    let one = temp("one-class");
    save(&solid(4, 4, [1, 2, 3]), &one.join("cats/a.png"), ImageFormat::Png);
    let e = err(&one);
    assert!(e.contains("found 1 class folder (cats)") && e.contains("at least two"), "{e}");

    let empty = temp("empty-class");
    save(&solid(4, 4, [1, 2, 3]), &empty.join("cats/a.png"), ImageFormat::Png);
    std::fs::create_dir_all(empty.join("dogs")).unwrap();
    let e = err(&empty);
    assert!(e.contains("dogs") && e.contains("no files"), "{e}");

    let unreadable = temp("unreadable-class");
    save(&solid(4, 4, [1, 2, 3]), &unreadable.join("cats/a.png"), ImageFormat::Png);
    std::fs::create_dir_all(unreadable.join("dogs")).unwrap();
    std::fs::write(unreadable.join("dogs/corrupt.jpg"), [0xFF, 0xD8, 0xFF, 0x00, 0x13]).unwrap();
    let e = err(&unreadable);
    assert!(e.contains("dogs") && e.contains("no readable images"), "{e}");

    let stray = fixture("stray-val");
    save(&solid(4, 4, [1, 2, 3]), &stray.join("val/green/a.png"), ImageFormat::Png);
    let e = err(&stray);
    assert!(e.contains("green") && e.contains("not among the training classes"), "{e}");

    let two = FolderOptions { channels: Some(2), ..Default::default() };
    let e = folder::load_dir(&stray, &two, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("1 (grey) or 3 (RGB)") && e.contains("not 2"), "{e}");

    let e = err(Path::new("/nonexistent/photos"));
    assert!(e.contains("/nonexistent/photos") && e.contains("not a folder"), "{e}");
}

#[test]
fn cli_reports_bad_folders_and_skipped_files() {
    let one = temp("cli-one-class");
    save(&solid(4, 4, [1, 2, 3]), &one.join("cats/a.png"), ImageFormat::Png);
    let o = steepest(&[
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        one.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_error(&o, &["cats", "at least two"]);

    let dir = fixture("cli-train");
    let (out, err) = run_ok(&[
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--model",
        "linear",
    ]);
    assert!(
        err.contains("truncated.jpg") && err.contains("notes.txt"),
        "each skipped file is named: {err}"
    );
    assert!(err.contains("skipped 2 unreadable files"), "{err}");
    assert!(out.contains("16 train, 8 val, 3x8x12, 2 classes"), "{out}");
}

/// The ant/bee photos: 397 JPEGs of many sizes and one GIF, trained end to end from the folder,
/// evaluated and predicted with the saved checkpoint.
#[test]
fn hymenoptera_trains_end_to_end() {
    let Some(data) = steepest::data::shared_data_dir("hymenoptera") else { return };
    let out_dir = temp("hymenoptera");
    let ckpt = out_dir.join("ants-bees.safetensors");
    let metrics = out_dir.join("m.jsonl");
    let (out, _) = run_ok(&[
        "train", "--dataset", "folder", "--data-dir", data.to_str().unwrap(), "--image-size", "32",
        "--model", "conv:16:3:p=1,bn,relu,maxpool:2,conv:32:3:p=1,bn,relu,maxpool:2,conv:64:3:p=1,bn,relu,gap,flatten,linear",
        "--normalize", "auto", "--augment", "crop:2,flip", "--epochs", "5", "--device", "cpu",
        "--save", ckpt.to_str().unwrap(), "--save-best", "--metrics", metrics.to_str().unwrap(),
    ]);
    // All 245 training images decode, the GIF placeholder included; 153 validate.
    assert!(out.contains("245 train, 153 val, 3x32x32, 2 classes"), "{out}");
    assert!(out.contains("val loss") && !out.contains("test loss"), "{out}");
    let accs: Vec<f64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["test_acc"].as_f64().unwrap()
        })
        .collect();
    let best = accs.iter().copied().fold(0.0, f64::max) * 100.0;
    // 83 of 153 are bees: always guessing one class scores at most 54%.
    assert!(best > 56.0, "val accuracy {best}% is no better than guessing: {out}");

    // eval of the --save-best checkpoint, given nothing but the file, reads the same folder at
    // the checkpoint's size and reproduces the best epoch's accuracy.
    let (out, _) =
        run_ok(&["eval", "--weights", ckpt.to_str().unwrap(), "--device", "cpu", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let eval_acc = v["test_acc"].as_f64().unwrap() * 100.0;
    assert!((eval_acc - best).abs() < 0.01, "eval {eval_acc}% vs the best epoch's {best}%");
    assert_eq!(v["class_names"], serde_json::json!(["ants", "bees"]));

    // predict resizes full-size photos the same way and names the classes.
    let bee = data.join("val/bees/abeja.jpg");
    let (out, _) = run_ok(&[
        "predict",
        "--weights",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        bee.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let top = &v["top"];
    assert_eq!(top.as_array().unwrap().len(), 2);
    let p: f64 = top.as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).sum();
    assert!((p - 1.0).abs() < 1e-5, "probabilities sum to 1: {top}");
    assert!(["ants", "bees"].contains(&top[0]["class"].as_str().unwrap()));
}

/// A most-common image size past 4096 a side (huge scans, forged headers) is not taken as the
/// default size: it would need terabytes. The error names --image-size.
#[test]
fn a_default_size_past_4096_is_refused() {
    let dir = temp("huge-default");
    for class in ["a", "b"] {
        for i in 0..2 {
            let path = dir.join(class).join(format!("{i}.png"));
            save(&solid(5000, 1, [9, 9, 9]), &path, ImageFormat::Png);
        }
    }
    let err = folder::load_dir(&dir, &FolderOptions::default(), &mut Vec::new())
        .expect_err("refused")
        .to_string();
    assert!(err.contains("--image-size") && err.contains("5000x1"), "{err}");
    let opts = FolderOptions { size: Some((32, 32)), ..Default::default() };
    assert!(folder::load_dir(&dir, &opts, &mut Vec::new()).is_ok(), "an explicit size works");
}

/// A class folder whose name is not UTF-8 is an error naming it (two such names used to collapse
/// into one class "�").
#[cfg(target_os = "linux")]
#[test]
fn a_non_utf8_class_folder_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = temp("non-utf8");
    save(&solid(8, 8, [1, 2, 3]), &dir.join("good").join("0.png"), ImageFormat::Png);
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    save(&solid(8, 8, [3, 2, 1]), &bad.join("0.png"), ImageFormat::Png);
    let err = folder::load_dir(&dir, &FolderOptions::default(), &mut Vec::new())
        .expect_err("refused")
        .to_string();
    assert!(err.contains("not valid UTF-8"), "{err}");
}

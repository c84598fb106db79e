//! Test-time augmentation (`--tta flip`): evaluation scores the mean of the logits of each test
//! image and its left-right mirror, in evaluation and in `predict`.

mod common;

use common::gpu;
use steepest::backend::Backend;
use steepest::cpu::CpuBackend;
use steepest::data::{synthetic, Dataset};
use steepest::nn::{Mode, Model, ModelSpec, Workspace};
use steepest::train::{evaluate, predict, Tta};

const SPEC: &str = "conv:4:3:p=1,relu,maxpool:2,flatten,linear";

fn model<B: Backend>(b: &mut B, data: &Dataset) -> Model<B> {
    let spec: ModelSpec = SPEC.parse().unwrap();
    Model::new(b, &spec, data.input_shape(), data.num_classes, 5).unwrap()
}

/// The logits of every test sample, from plain forward passes of `pixels`.
fn logits(b: &mut CpuBackend, model: &Model<CpuBackend>, pixels: &[u8], rows: usize) -> Vec<f32> {
    let ws = Workspace::new(b, model, rows).unwrap();
    ws.load_batch(b, pixels, &vec![0; rows]);
    model.forward(b, &ws, rows, Mode::Eval);
    b.read(ws.logits(), rows * model.num_classes).unwrap()
}

/// Every image mirrored left to right, written out index by index.
fn mirrored(data: &Dataset) -> Vec<u8> {
    let (c, h, w) = (data.channels, data.height, data.width);
    let src = data.test.images().expect("in memory");
    let mut out = vec![0; src.len()];
    for n in 0..data.test.len {
        for plane in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let at = |col: usize| ((n * c + plane) * h + y) * w + col;
                    out[at(x)] = src[at(w - 1 - x)];
                }
            }
        }
    }
    out
}

/// On the CPU, `evaluate` with flips gives exactly the loss and accuracy of the mean logits
/// computed here from two plain forward passes (the same f32 mean, `(a + b)·0.5`; the loss
/// summed in f64 here, in f32 there over 300 rows: within 1e-5 relative). The mirror must matter
/// on this data (else the test could not tell a missing flip).
#[test]
fn flip_scores_the_mean_logits_of_image_and_mirror() {
    // Grey synthetic images, and random RGB ones (each channel mirrored on its own).
    let mut rgb = steepest::bench::data_for([3, 6, 5], 300);
    rgb.test = rgb.train.clone();
    for data in [synthetic::generate(4, 10, 300), rgb] {
        check_flip(&data);
    }
}

fn check_flip(data: &Dataset) {
    let mut cpu = CpuBackend::new();
    let model = model(&mut cpu, data);
    let rows = data.test.len;
    let classes = data.num_classes;
    let plain = logits(&mut cpu, &model, data.test.images().unwrap(), rows);
    let flipped = logits(&mut cpu, &model, &mirrored(data), rows);
    assert_ne!(plain, flipped, "the images are not mirror-symmetric");
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (r, (a, b)) in plain.chunks_exact(classes).zip(flipped.chunks_exact(classes)).enumerate() {
        let mean: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x + y) * 0.5).collect();
        let max = mean.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max as f64 + mean.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln();
        let label = data.test.labels[r] as usize;
        loss += lse - mean[label] as f64;
        let pred = (0..classes).fold(0, |best, j| if mean[j] > mean[best] { j } else { best });
        correct += (pred == label) as usize;
    }
    let got = evaluate(&mut cpu, &model, &data.test, 64, Tta::Flip).unwrap();
    let want_loss = loss / rows as f64;
    assert!(
        (got.loss as f64 - want_loss).abs() <= 1e-5 * want_loss,
        "loss {} vs {want_loss}",
        got.loss
    );
    assert_eq!((got.accuracy * rows as f32).round() as usize, correct, "correct samples");
    let none = evaluate(&mut cpu, &model, &data.test, 64, Tta::None).unwrap();
    assert_ne!(none.loss, got.loss, "flips changed nothing");

    // `predict` (what `steepest predict` prints) scores the same mean logits: its
    // probabilities are their softmax (f64 on the host both times, rounded once to f32).
    let probs = predict(&mut cpu, &model, data.test.images().unwrap(), 64, Tta::Flip).unwrap();
    for (r, (a, b)) in plain.chunks_exact(classes).zip(flipped.chunks_exact(classes)).enumerate() {
        let mean: Vec<f64> = a.iter().zip(b).map(|(x, y)| ((x + y) * 0.5) as f64).collect();
        let max = mean.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = mean.iter().map(|v| (v - max).exp()).sum();
        for (j, &v) in mean.iter().enumerate() {
            let want = ((v - max).exp() / sum) as f32;
            assert!(
                (probs[r][j] - want).abs() <= 1e-6,
                "sample {r} class {j}: {} vs {want}",
                probs[r][j]
            );
        }
    }
}

/// The GPU's flip evaluation against the CPU's: the same forward passes (each op cross-checked
/// elsewhere) and the same mean; a loss within 1e-4 relative (f32 sums in other orders through
/// a conv and a linear layer), and the accuracy within one sample of 300 (a near-tie may break
/// the other way).
#[test]
fn gpu_flip_evaluation_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let data = synthetic::generate(4, 10, 300);
    let mut cpu = CpuBackend::new();
    let on_cpu = model(&mut cpu, &data);
    let on_gpu = model(&mut g, &data);
    let want = evaluate(&mut cpu, &on_cpu, &data.test, 128, Tta::Flip).unwrap();
    let got = evaluate(&mut g, &on_gpu, &data.test, 128, Tta::Flip).unwrap();
    assert!((got.loss - want.loss).abs() <= 1e-4 * want.loss, "{} vs {}", got.loss, want.loss);
    // The two passes must see different pixels: the GPU's queue writes run before anything
    // recorded, so an upload that jumped ahead of the first pass would score the batch twice.
    let plain = evaluate(&mut g, &on_gpu, &data.test, 128, Tta::None).unwrap();
    assert!((plain.loss - got.loss).abs() > 1e-3 * want.loss, "{plain:?} vs {got:?}");
    assert!((got.accuracy - want.accuracy).abs() <= 1.5 / 300.0, "{got:?} vs {want:?}");
}

//! One training step of `lenet` and `cifar-cnn` at batch 128 and 256 on the CPU and on the GPU,
//! from the same initial weights and the same batch: every parameter's gradient is checked. The
//! GPU runs the step twice, under a software adapter's kernel plans and under a discrete GPU's
//! (see `GpuBackend::plan_as_software`), so lavapipe checks the plans real GPUs run as well.
//!
//! How the bound is derived. A parameter gradient is one reduction over its layer's inputs:
//! Linear dW[o, j] = Σ_r dY[r, o]·X[r, j] (K = batch terms); Conv2d dW[o, c, ky, kx] =
//! Σ_{n, oy, ox} dY[n, o, oy, ox]·X[n, c, oy·s + ky - p, ox·s + kx - p] (K = batch × output
//! pixels: 73,728 for LeNet's first conv at batch 128); biases Σ dY; BatchNorm's weight
//! Σ dY·(x - mean)·invstd and its bias Σ dY per channel (K = batch × pixels). For each backend we
//! read back the inputs it used (X, dY, the batch statistics), evaluate the reduction in f64, and
//! require its f32 result to lie within γ_K'·Σ|terms| of that, where γ_n = n·u/(1 - n·u),
//! u = 2⁻²⁴, and K' = K plus the roundings inside a term (one product; three for BatchNorm's
//! weight). That is the classic worst-case bound for a sum in any order, so it holds for split-K,
//! chunked and threaded sums alike, and a dropped K range (lavapipe's loop limit once dropped all
//! of K past ~58,000 in LeNet's first conv: 13-29 % of the gradient) fails it by orders of
//! magnitude.
//!
//! Then CPU against GPU: the two differ by their rounding (at most γ_K'·(S_cpu + S_gpu)) plus
//! what their inputs differ by, which we compute exactly as |E_gpu - E_cpu| from the f64
//! evaluations. We also bound that input difference: every reduction before this one in the step
//! (forward and backward) perturbs its result by at most γ_K_l relative to its own Σ|terms|; to
//! first order these add up along the step, so the input difference may move the gradient by at
//! most Σ_l γ_K_l · max Σ|terms| of this gradient tensor. That sum is computed from the model's reductions
//! (about 1e-2 for LeNet at batch 128): loose, but derived, and a wrong kernel anywhere in the
//! step breaks it.

mod common;

use common::{gpu, U};
use steepest::backend::Backend;
use steepest::cpu::CpuBackend;
use steepest::nn::{Layer, Mode, Model, ModelSpec, Shape, Workspace};

fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U as f64;
    nu / (1.0 - nu)
}

/// What one backend computed: each checked gradient with its f64 reference and Σ|terms|.
struct Checked {
    name: String,
    k: usize,
    got: Vec<f32>,
    exact: Vec<f64>,
    abs: Vec<f64>,
}

fn read<B: Backend>(b: &mut B, buf: &B::Buf, len: usize) -> Vec<f32> {
    b.read(buf, len).unwrap()
}

/// One forward + backward step; the gradients of every parameter with their f64 references.
fn step<B: Backend>(
    b: &mut B,
    spec: &ModelSpec,
    input: Shape,
    rows: usize,
    pixels: &[u8],
    labels: &[u32],
) -> Vec<Checked> {
    let model = Model::new(b, spec, input, 10, 7).unwrap();
    let ws = Workspace::new(b, &model, rows).unwrap();
    let stats = b.alloc(3).unwrap();
    ws.load_batch(b, pixels, labels);
    b.fill_zero(&stats);
    let mode = Mode::Train { step: 0 };
    model.forward(b, &ws, rows, mode);
    model.loss(b, &ws, &stats, rows);
    model.backward(b, &ws, rows, mode);

    let params = model.params();
    let grad_of = |name: &str| params.iter().find(|p| p.name == name).expect(name);
    let mut out = Vec::new();
    for (i, layer) in model.chain.layers.iter().enumerate() {
        let in_shape = if i == 0 { model.input } else { model.chain.shapes[i - 1] };
        let x_buf = if i == 0 { &ws.input } else { &ws.bufs.activations[i - 1] };
        let x = read(b, x_buf, rows * in_shape.len());
        let dy = read(b, &ws.bufs.grads[i], rows * model.chain.shapes[i].len());
        match layer {
            Layer::Linear { inputs, outputs, .. } => {
                let (ni, no) = (*inputs, *outputs);
                let mut exact = vec![0.0; no * ni];
                let mut abs = vec![0.0; no * ni];
                let mut eb = vec![0.0; no];
                let mut ab = vec![0.0; no];
                for r in 0..rows {
                    for o in 0..no {
                        let g = dy[r * no + o] as f64;
                        eb[o] += g;
                        ab[o] += g.abs();
                        for j in 0..ni {
                            let t = g * x[r * ni + j] as f64;
                            exact[o * ni + j] += t;
                            abs[o * ni + j] += t.abs();
                        }
                    }
                }
                let w = grad_of(&format!("{i}.weight"));
                out.push(Checked {
                    name: w.name.clone(),
                    k: rows + 1,
                    got: read(b, w.grad, w.len()),
                    exact,
                    abs,
                });
                let bias = grad_of(&format!("{i}.bias"));
                out.push(Checked {
                    name: bias.name.clone(),
                    k: rows,
                    got: read(b, bias.grad, no),
                    exact: eb,
                    abs: ab,
                });
            }
            Layer::Conv { window: win, outputs, .. } => {
                let (oh, ow) = (win.out_h(), win.out_w());
                let (c_in, h, w_in, kh, kw) =
                    (win.channels, win.height, win.width, win.kernel_h, win.kernel_w);
                let patch = win.patch_len();
                let no = *outputs;
                let mut exact = vec![0.0; no * patch];
                let mut abs = vec![0.0; no * patch];
                let mut eb = vec![0.0; no];
                let mut ab = vec![0.0; no];
                for n in 0..rows {
                    for o in 0..no {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let g = dy[((n * no + o) * oh + oy) * ow + ox] as f64;
                                eb[o] += g;
                                ab[o] += g.abs();
                                if g == 0.0 {
                                    continue;
                                }
                                for c in 0..c_in {
                                    for ky in 0..kh {
                                        let iy =
                                            (oy * win.stride_h + ky) as isize - win.pad_h as isize;
                                        if iy < 0 || iy >= h as isize {
                                            continue;
                                        }
                                        for kx in 0..kw {
                                            let ix = (ox * win.stride_w + kx) as isize
                                                - win.pad_w as isize;
                                            if ix < 0 || ix >= w_in as isize {
                                                continue;
                                            }
                                            let v = x[((n * c_in + c) * h + iy as usize) * w_in
                                                + ix as usize]
                                                as f64;
                                            let idx = o * patch + (c * kh + ky) * kw + kx;
                                            exact[idx] += g * v;
                                            abs[idx] += (g * v).abs();
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                let k = rows * oh * ow;
                let w = grad_of(&format!("{i}.weight"));
                out.push(Checked {
                    name: w.name.clone(),
                    k: k + 1,
                    got: read(b, w.grad, w.len()),
                    exact,
                    abs,
                });
                if let Some(bias) = params.iter().find(|p| p.name == format!("{i}.bias")) {
                    out.push(Checked {
                        name: bias.name.clone(),
                        k,
                        got: read(b, bias.grad, no),
                        exact: eb,
                        abs: ab,
                    });
                }
            }
            Layer::BatchNorm(bn) => {
                let (nc, np) = (bn.channels, bn.pixels);
                let saved = read(b, ws.bufs.scratch[i].saved.as_ref().unwrap(), 2 * nc);
                let (mut eg, mut ag, mut eb, mut ab) =
                    (vec![0.0; nc], vec![0.0; nc], vec![0.0; nc], vec![0.0; nc]);
                for n in 0..rows {
                    for c in 0..nc {
                        let (mean, invstd) = (saved[c] as f64, saved[nc + c] as f64);
                        for p in 0..np {
                            let idx = (n * nc + c) * np + p;
                            let g = dy[idx] as f64;
                            let t = g * (x[idx] as f64 - mean) * invstd;
                            eg[c] += t;
                            ag[c] += t.abs();
                            eb[c] += g;
                            ab[c] += g.abs();
                        }
                    }
                }
                let k = rows * np;
                let w = grad_of(&format!("{i}.weight"));
                out.push(Checked {
                    name: w.name.clone(),
                    k: k + 3,
                    got: read(b, w.grad, nc),
                    exact: eg,
                    abs: ag,
                });
                let bias = grad_of(&format!("{i}.bias"));
                out.push(Checked {
                    name: bias.name.clone(),
                    k,
                    got: read(b, bias.grad, nc),
                    exact: eb,
                    abs: ab,
                });
            }
            _ => {}
        }
    }
    assert_eq!(out.len(), params.len(), "every parameter is checked");
    out
}

/// Σ_l γ_K_l over every reduction a step runs: the matmuls (forward, weight and input
/// gradients), the softmax sums (10 classes) and batch norm's statistics and backward sums.
fn step_budget(model: &Model<CpuBackend>, rows: usize) -> f64 {
    let matmuls: f64 = model.matmul_shapes(rows).iter().map(|&(_, _, k, _, _)| gamma(k + 1)).sum();
    let batch_norms: f64 = model
        .chain
        .layers
        .iter()
        .map(|layer| match layer {
            // Mean, variance, and the two backward sums.
            Layer::BatchNorm(bn) => 4.0 * gamma(rows * bn.pixels + 3),
            _ => 0.0,
        })
        .sum();
    matmuls + batch_norms + gamma(10 + 3)
}

fn check_model(spec: &str, input: Shape) {
    let Some(mut g) = gpu() else { return };
    let spec: ModelSpec = spec.parse().unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    for rows in [128, 256] {
        let pixels: Vec<u8> = (0..rows * input.len()).map(|_| rng.u8(..)).collect();
        let labels: Vec<u32> = (0..rows).map(|_| rng.u32(0..10)).collect();
        let mut cpu = CpuBackend::new();
        let budget = step_budget(&Model::new(&mut cpu, &spec, input, 10, 7).unwrap(), rows);
        let on_cpu = step(&mut cpu, &spec, input, rows, &pixels, &labels);
        // Under this adapter's plans and a discrete GPU's (wide kernels, up to 64 K ranges side
        // by side, √rows bias-gradient chunks), so that lavapipe checks what real GPUs run.
        for software in [true, false] {
            g.plan_as_software(Some(software));
            let on_gpu = step(&mut g, &spec, input, rows, &pixels, &labels);
            let plan = if software { "software plan" } else { "GPU plan" };
            compare(&spec, rows, plan, &on_cpu, &on_gpu, budget);
        }
    }
}

/// Every gradient of `on_cpu` and `on_gpu` within its f32 bound of the exact sum of its own
/// inputs, and the two sides' inputs within the step's rounding budget of each other.
fn compare(
    spec: &ModelSpec,
    rows: usize,
    plan: &str,
    on_cpu: &[Checked],
    on_gpu: &[Checked],
    budget: f64,
) {
    assert_eq!(on_cpu.len(), on_gpu.len(), "{spec} batch {rows} ({plan}): gradients checked");
    for (c, gp) in on_cpu.iter().zip(on_gpu) {
        assert_eq!(c.name, gp.name);
        let gk = gamma(c.k);
        let scale = c.abs.iter().chain(&gp.abs).fold(0.0f64, |m, &v| m.max(v));
        let mut inputs_max = 0.0f64;
        for j in 0..c.got.len() {
            for (side, t) in [("cpu", c), ("gpu", gp)] {
                let err = (t.got[j] as f64 - t.exact[j]).abs();
                let tol = gk * t.abs[j] + f32::MIN_POSITIVE as f64;
                assert!(
                    err <= tol,
                    "{spec} batch {rows} ({plan}) {}[{j}] on the {side}: {} but the exact sum \
                         of its inputs is {} (|diff| {err:.3e} > γ_K·Σ|terms| = {tol:.3e}, K = {})",
                    t.name,
                    t.got[j],
                    t.exact[j],
                    c.k
                );
            }
            inputs_max = inputs_max.max((gp.exact[j] - c.exact[j]).abs());
        }
        // Norm-wise: the largest input-induced difference against the budget times the
        // largest Σ|terms| of the tensor (element-wise, a gradient entry whose terms nearly
        // all vanish behind ReLUs would carry other entries' share of the deviation).
        let inputs_bound = budget * scale;
        assert!(
            inputs_max <= inputs_bound,
            "{spec} batch {rows} ({plan}) {}: the GPU's inputs move it by up to \
                 {inputs_max:.3e}, more than the step's rounding budget {budget:.3e}·max Σ|terms| \
                 = {inputs_bound:.3e}",
            c.name
        );
        let worst = inputs_max / inputs_bound;
        eprintln!(
            "{spec} batch {rows} ({plan}) {}: input deviation at most {:.1e} of its budget",
            c.name, worst
        );
    }
}

#[test]
fn lenet_gradients_match_cpu_at_batch_128_and_256() {
    check_model("lenet", Shape::new(1, 28, 28));
}

#[test]
fn cifar_cnn_gradients_match_cpu_at_batch_128_and_256() {
    check_model("cifar-cnn", Shape::new(3, 32, 32));
}

//! GPU-against-CPU checks, one list shared by the tests (`tests/doctor.rs`) and `steepest
//! doctor`: each runs an op on seeded inputs on both backends and compares every output value
//! with a bound derived from f32 error analysis (the same bounds as `tests/cross_check_*.rs`):
//!
//! - copies, selections and single correctly rounded operations: exact (bound 0);
//! - sums of n terms in different orders: 2·γ_n·Σ|terms| per value, γ_n = n·u/(1 - n·u),
//!   u = 2⁻²⁴, with Σ|terms| computed by the same op on absolute values;
//! - transcendental functions (exp, log, sqrt) and FMA contraction: a few ulp, stated per check.
//!
//! A check's verdict is its largest |gpu - cpu| / bound (≤ 1 passes). A new kernel gets a check
//! here, and so both the tests and users' `doctor` runs cover it.

use std::time::Instant;

use crate::backend::{
    AdamHyper, Backend, BatchNormHyper, MatmulForm, Nchw, RmspropHyper, SgdHyper, Window,
};
use crate::cpu::CpuBackend;
use crate::gpu::matmul::MatmulVariant;
use crate::gpu::GpuBackend;
use crate::nn::{Model, ModelSpec, Shape};
use crate::Result;

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

fn gamma(n: usize) -> f64 {
    let n = n as f64;
    n * U / (1.0 - n * U)
}

/// One check's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub kernel: String,
    pub shapes: String,
    /// The largest |gpu - cpu| over the outputs.
    pub max_error: f64,
    /// The bound at the value where |gpu - cpu| / bound is largest.
    pub bound: f64,
    /// max |gpu - cpu| / bound: at most 1 to pass.
    pub ratio: f64,
    pub seconds: f64,
    /// Why the check did not run: its buffers exceed this adapter's limits, which training
    /// refuses the same way (a smaller batch fits).
    pub skipped: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.skipped.is_some() || self.ratio <= 1.0
    }
}

/// Compares outputs value by value against per-value bounds.
#[derive(Default)]
struct Compare {
    max_error: f64,
    bound: f64,
    ratio: f64,
}

impl Compare {
    /// `bound[i]` for each value (a slice of length 1 applies to all), plus `atol`. Keeps the
    /// largest error, and the largest error-to-bound ratio with the bound it was measured at.
    fn add(&mut self, got: &[f32], want: &[f32], bound: &[f64], atol: f64) {
        if got.len() != want.len() {
            self.ratio = f64::INFINITY;
            return;
        }
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w as f64).abs();
            let b = bound.get(i).or(bound.first()).copied().unwrap_or(0.0) + atol;
            let ratio = match (g.is_nan() || w.is_nan(), err == 0.0) {
                // NaN on one side, or on both, is never a match to trust.
                (true, _) => f64::INFINITY,
                (false, true) => 0.0,
                (false, false) if b > 0.0 => err / b,
                (false, false) => f64::INFINITY,
            };
            self.max_error = self.max_error.max(err);
            if ratio > self.ratio {
                self.ratio = ratio;
                self.bound = b;
            }
        }
    }

    fn exact(&mut self, got: &[f32], want: &[f32]) {
        self.add(got, want, &[0.0], 0.0)
    }

    /// Relative `rtol` of each wanted value plus `atol`.
    fn relative(&mut self, got: &[f32], want: &[f32], rtol: f64, atol: f64) {
        let bound: Vec<f64> = want.iter().map(|w| rtol * (*w as f64).abs()).collect();
        self.add(got, want, &bound, atol)
    }
}

/// Runs `$body` once on each backend with `$b` bound to it; gives `(cpu, gpu)` results.
macro_rules! on_both {
    ($cpu:expr, $gpu:expr, |$b:ident| $body:block) => {{
        let c = {
            let $b = &mut *$cpu;
            $body
        };
        let g = {
            let $b = &mut *$gpu;
            $body
        };
        (c, g)
    }};
}

/// A buffer holding `v`.
fn buf<B: Backend>(b: &mut B, v: &[f32]) -> Result<B::Buf> {
    let x = b.alloc(v.len().max(1))?;
    b.write(&x, v);
    Ok(x)
}

fn random(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// `2·γ_n·Σ|terms|` per value.
fn sum_bound(n: usize, abs_sums: &[f32]) -> Vec<f64> {
    abs_sums.iter().map(|s| 2.0 * gamma(n) * *s as f64).collect()
}

/// `STEEPEST_DOCTOR_INJECT=KERNEL`: adds 1 to that kernel's first GPU output, so a test can
/// see a wrong result reported (the test of doctor's own verdicts).
fn inject(kernel: &str, got: &mut [f32]) {
    if std::env::var("STEEPEST_DOCTOR_INJECT").is_ok_and(|k| k == kernel) {
        if let Some(v) = got.first_mut() {
            *v += 1.0;
        }
    }
}

/// A check's body: runs the op on both backends and feeds the outputs to the comparison.
type CheckFn = Box<dyn Fn(&mut CpuBackend, &mut GpuBackend, &mut Compare) -> Result<()>>;

/// One check: a kernel at some shapes.
pub struct Check {
    pub kernel: String,
    pub shapes: String,
    run: CheckFn,
}

impl Check {
    fn new(
        kernel: impl Into<String>,
        shapes: impl Into<String>,
        run: impl Fn(&mut CpuBackend, &mut GpuBackend, &mut Compare) -> Result<()> + 'static,
    ) -> Self {
        Check { kernel: kernel.into(), shapes: shapes.into(), run: Box::new(run) }
    }

    pub fn run(&self, cpu: &mut CpuBackend, gpu: &mut GpuBackend) -> Result<Outcome> {
        let started = Instant::now();
        let mut c = Compare::default();
        let skipped = match (self.run)(cpu, gpu, &mut c) {
            Ok(()) => None,
            // A buffer over the adapter's limit: the shape cannot run here at all.
            Err(crate::Error::Gpu(why)) if why.contains("in one buffer") => Some(why),
            Err(e) => return Err(e),
        };
        Ok(Outcome {
            kernel: self.kernel.clone(),
            shapes: self.shapes.clone(),
            max_error: c.max_error,
            bound: c.bound,
            ratio: c.ratio,
            seconds: started.elapsed().as_secs_f64(),
            skipped,
        })
    }
}

/// `(m, k, n)` shapes with 1s, primes and non-multiples of every tile.
const MATMUL_SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 1), (7, 13, 5), (33, 65, 17), (130, 257, 63), (1, 300, 1), (128, 784, 256)];

/// Every preset whose training-step matmuls are checked, as `(spec, input, batch)`: batch
/// 128 for the small-image models; `resnet18` at 224×224 with a fine-tuning batch of 4 (its
/// stem's weight gradient still sums 50,176 terms).
const PRESET_SHAPES: &[(&str, [usize; 3], usize)] = &[
    ("mlp:256", [1, 28, 28], 128),
    ("lenet", [1, 28, 28], 128),
    ("cifar-cnn", [3, 32, 32], 128),
    ("resnet8", [3, 32, 32], 128),
    ("resnet20", [3, 32, 32], 128),
    ("cifar-fast", [3, 32, 32], 128),
    ("resnet18", [3, 224, 224], 4),
];

fn matmul_check(
    form: MatmulForm,
    (m, k, n): (usize, usize, usize),
    variant: Option<MatmulVariant>,
    what: String,
) -> Check {
    let name = format!(
        "matmul {}{}",
        form.name(),
        variant.map(|v| format!(" ({})", v.name())).unwrap_or_default()
    );
    Check::new(name.clone(), format!("{m}x{k}x{n} {what}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed((m * 31 + k * 7 + n) as u64);
        let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
        gpu.force_matmul_variant(variant);
        let (want, got) = on_both!(cpu, gpu, |be| {
            let (ga, gb, gc) = (buf(be, &a)?, buf(be, &b)?, be.alloc(m * n)?);
            be.matmul(form, &ga, &gb, &gc, m, k, n);
            be.read(&gc, m * n)?
        });
        gpu.force_matmul_variant(None);
        let mut got = got;
        inject(&name, &mut got);
        let mut bound = vec![0.0; m * n];
        crate::cpu::matmul::matmul(form, &abs(&a), &abs(&b), &mut bound, m, k, n);
        c.add(&got, &want, &sum_bound(k, &bound), f32::MIN_POSITIVE as f64);
        Ok(())
    })
}

/// `matmul_bias` (a Linear forward, bias and ReLU applied as C is stored) in the variant and K
/// split the adapter picks: against the CPU's matmul then add_bias, within the matmul's bound
/// plus one rounding of the bias add on each side.
fn matmul_bias_check((m, k, n): (usize, usize, usize), relu: bool) -> Check {
    let what = if relu { "matmul_bias (relu)" } else { "matmul_bias" };
    Check::new(what, format!("{m}x{k}x{n}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed((m * 31 + k * 7 + n) as u64);
        let (a, b, bias) = (random(&mut rng, m * k), random(&mut rng, k * n), random(&mut rng, n));
        let form = MatmulForm::ABt;
        let (want, mut got) = on_both!(cpu, gpu, |be| {
            let (ga, gb, gbias, gc) =
                (buf(be, &a)?, buf(be, &b)?, buf(be, &bias)?, be.alloc(m * n)?);
            be.matmul_bias(form, &ga, &gb, &gc, [m, k, n], &gbias, relu);
            be.read(&gc, m * n)?
        });
        inject(what, &mut got);
        let mut sums = vec![0.0; m * n];
        crate::cpu::matmul::matmul(form, &abs(&a), &abs(&b), &mut sums, m, k, n);
        let bound: Vec<f64> = sum_bound(k, &sums)
            .iter()
            .zip(&want)
            .map(|(s, w)| s + 2.0 * U * w.abs() as f64)
            .collect();
        c.add(&got, &want, &bound, f32::MIN_POSITIVE as f64);
        Ok(())
    })
}

/// Every check: each matmul variant and form at odd shapes, the presets' training shapes,
/// the element-wise, data, conv, pooling, batch norm, loss and optimizer kernels.
pub fn all() -> Vec<Check> {
    let mut checks = Vec::new();
    let forms = [MatmulForm::AB, MatmulForm::AtB, MatmulForm::ABt];
    for variant in MatmulVariant::ALL {
        for form in forms {
            for &shape in MATMUL_SHAPES {
                checks.push(matmul_check(form, shape, Some(variant), String::new()));
            }
        }
    }
    // The shapes training runs, in the variant the adapter picks.
    let mut cpu = CpuBackend::new();
    let mut seen = std::collections::HashSet::new();
    for &(name, [c, h, w], batch) in PRESET_SHAPES {
        let Ok(spec) = name.parse::<ModelSpec>() else { continue };
        let Ok(model) = Model::new(&mut cpu, &spec, Shape::new(c, h, w), 10, 0) else { continue };
        for (form, m, k, n, what) in model.matmul_shapes(batch) {
            // Blocks repeat shapes: each (form, shape) once.
            if seen.insert((form.name(), m, k, n)) {
                checks.push(matmul_check(form, (m, k, n), None, format!("({name} {what})")));
            }
        }
    }
    // The MLP's hidden layer (one K range: the matmul kernel's epilogue), its output layer, and
    // a K split side by side (the epilogue in `sum_splits`).
    checks.extend([
        matmul_bias_check((128, 784, 256), true),
        matmul_bias_check((128, 256, 10), false),
        matmul_bias_check((8, 40_000, 24), true),
    ]);
    checks.extend(elementwise_checks());
    checks.extend(conv_checks());
    checks.extend(pool_checks());
    // One workgroup per channel; and channels of 131,072 values, summed in spans (ResNet's first
    // stage at batch 128).
    checks.extend([batchnorm_check((64, 16, 16 * 16)), batchnorm_check((128, 16, 32 * 32))]);
    checks.extend([loss_check(0.0), loss_check(0.1)]);
    checks.extend(optimizer_checks());
    checks
}

fn elementwise_checks() -> Vec<Check> {
    let mut out = Vec::new();
    for len in [5usize, 128 * 784 + 3] {
        out.push(Check::new("pixels_to_f32", format!("{len}"), move |cpu, gpu, c| {
            let mut rng = fastrand::Rng::with_seed(3);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let (want, mut got) = on_both!(cpu, gpu, |b| {
                let (src, dst) = (b.alloc_bytes(len)?, b.alloc(len)?);
                b.write_bytes(&src, &bytes);
                b.pixels_to_f32(&src, &dst, len);
                b.read(&dst, len)?
            });
            inject("pixels_to_f32", &mut got);
            c.exact(&got, &want);
            Ok(())
        }));
    }
    let (rows, cols) = (130, 257);
    for relu in [false, true] {
        let name = if relu { "add_bias_relu" } else { "add_bias" };
        out.push(Check::new(name, format!("{rows}x{cols}"), move |cpu, gpu, c| {
            let mut rng = fastrand::Rng::with_seed(4);
            let (x, bias) = (random(&mut rng, rows * cols), random(&mut rng, cols));
            let (want, mut got) = on_both!(cpu, gpu, |b| {
                let (gx, gb) = (buf(b, &x)?, buf(b, &bias)?);
                b.add_bias(&gx, &gb, rows, cols, relu);
                b.read(&gx, rows * cols)?
            });
            inject(name, &mut got);
            c.exact(&got, &want);
            Ok(())
        }));
    }
    let len = 256 * 16 * 32 * 32;
    out.push(Check::new("add", format!("{len}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(5);
        let (x, y) = (random(&mut rng, len), random(&mut rng, len));
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let (gx, gy, out) = (buf(b, &x)?, buf(b, &y)?, b.alloc(len)?);
            b.add(&gx, &gy, &out, len);
            b.read(&out, len)?
        });
        inject("add", &mut got);
        c.exact(&got, &want);
        Ok(())
    }));
    let len = 100_003;
    out.push(Check::new("scale", format!("{len}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(15);
        let x = random(&mut rng, len);
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let gx = buf(b, &x)?;
            b.scale(&gx, len, 0.3);
            b.read(&gx, len)?
        });
        inject("scale", &mut got);
        c.exact(&got, &want);
        Ok(())
    }));
    out.push(Check::new("relu, relu_backward", format!("{len}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(6);
        let (x, g) = (random(&mut rng, len), random(&mut rng, len));
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let (gx, gg) = (buf(b, &x)?, buf(b, &g)?);
            b.relu(&gx, len);
            b.relu_backward(&gg, &gx, len);
            let mut v = b.read(&gx, len)?;
            v.extend(b.read(&gg, len)?);
            v
        });
        inject("relu, relu_backward", &mut got);
        c.exact(&got, &want);
        Ok(())
    }));
    let (rows, cols) = (4096 * 3 + 7, 37);
    out.push(Check::new("bias_grad", format!("{rows}x{cols}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(8);
        let g = random(&mut rng, rows * cols);
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let (gg, out) = (buf(b, &g)?, b.alloc(cols)?);
            b.bias_grad(&gg, &out, rows, cols);
            b.read(&out, cols)?
        });
        inject("bias_grad", &mut got);
        let sums: Vec<f32> =
            (0..cols).map(|j| (0..rows).map(|i| g[i * cols + j].abs()).sum()).collect();
        c.add(&got, &want, &sum_bound(rows, &sums), 0.0);
        Ok(())
    }));
    let (rows, channels, pixels) = (64, 3, 32 * 32);
    out.push(Check::new("normalize", format!("{rows}x{channels}x{pixels}"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(9);
        let x: Vec<f32> = (0..rows * channels * pixels).map(|_| rng.f32()).collect();
        let stats = [0.49, 0.48, 0.45, 1.0 / 0.25, 1.0 / 0.24, 1.0 / 0.26];
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let (gx, gs) = (buf(b, &x)?, buf(b, &stats)?);
            b.normalize(&gx, &gs, Nchw::new(rows, channels, pixels));
            b.read(&gx, x.len())?
        });
        inject("normalize", &mut got);
        // (x - mean)·(1/std): a subtraction and a product, possibly contracted into an FMA.
        c.relative(&got, &want, 4.0 * U, 1e-6);
        Ok(())
    }));
    let (rows, shape) = (128usize, [3usize, 32usize, 32usize]);
    out.push(Check::new(
        "gather_batch",
        format!("{rows} of 300 x {}x{}x{} in 2 parts (crop, flip)", shape[0], shape[1], shape[2]),
        move |cpu, gpu, c| {
            let mut rng = fastrand::Rng::with_seed(10);
            let n = 300;
            let sample = shape.iter().product::<usize>();
            let images: Vec<u8> = (0..n * sample).map(|_| rng.u8(..)).collect();
            let labels: Vec<u32> = (0..n).map(|_| rng.u32(0..10)).collect();
            // Index and shift code (dy + 128 | (dx + 128) << 8 | flip << 16) per sample.
            let codes: Vec<u32> = (0..rows)
                .flat_map(|_| {
                    let (dy, dx) = (rng.u32(124..133), rng.u32(124..133));
                    [rng.u32(0..n as u32), dy | dx << 8 | (rng.bool() as u32) << 16]
                })
                .collect();
            // Held in two buffers, as a data set larger than one binding is.
            let parts = [0..170, 170..n];
            let (want, mut got) = on_both!(cpu, gpu, |b| {
                let (lb, bt) = (b.alloc_indices(n)?, b.alloc_indices(codes.len())?);
                b.write_indices(&lb, &labels);
                b.write_indices(&bt, &codes);
                let (input, out_labels) = (b.alloc(rows * sample)?, b.alloc_indices(rows)?);
                for held in &parts {
                    let im = b.alloc_bytes(held.len() * sample)?;
                    b.write_bytes(&im, &images[held.start * sample..held.end * sample]);
                    b.gather_batch(&im, held.clone(), &lb, &bt, &input, &out_labels, rows, shape);
                }
                b.read(&input, rows * sample)?
            });
            inject("gather_batch", &mut got);
            c.exact(&got, &want);
            Ok(())
        },
    ));
    let len = 200_003;
    out.push(Check::new("dropout", format!("{len}, p 0.3"), move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(11);
        let x = random(&mut rng, len);
        let (want, mut got) = on_both!(cpu, gpu, |b| {
            let gx = buf(b, &x)?;
            b.dropout(&gx, len, 12345, 0.3);
            b.read(&gx, len)?
        });
        inject("dropout", &mut got);
        c.exact(&got, &want);
        Ok(())
    }));
    out
}

/// A whole Conv2d forward and backward on `b`: outputs, weight and bias gradients, input
/// gradient, concatenated.
#[allow(clippy::too_many_arguments)]
fn conv_outputs<B: Backend>(
    b: &mut B,
    w: &Window,
    rows: usize,
    o: usize,
    x: &[f32],
    wt: &[f32],
    bs: &[f32],
    d: &[f32],
) -> Result<Vec<f32>> {
    let out_len = rows * o * w.out_pixels();
    let (gx, gw, gb, gdy) = (buf(b, x)?, buf(b, wt)?, buf(b, bs)?, buf(b, d)?);
    let (y, gw_out, gb_out, dx) =
        (b.alloc(out_len)?, b.alloc(wt.len())?, b.alloc(o)?, b.alloc(x.len())?);
    let (cl, zl) = b.conv_scratch_len(rows, w, o);
    let (col, z) = (b.alloc(cl.max(1))?, b.alloc(zl.max(1))?);
    b.conv2d_forward(&gx, &gw, Some(&gb), &y, &col, &z, rows, w, o, false);
    b.conv2d_backward(&gx, &gdy, &gw, &gw_out, Some(&gb_out), Some(&dx), &col, &z, rows, w, o);
    let mut v = b.read(&y, out_len)?;
    v.extend(b.read(&gw_out, wt.len())?);
    v.extend(b.read(&gb_out, o)?);
    v.extend(b.read(&dx, x.len())?);
    Ok(v)
}

/// Whole Conv2d forward and backward (im2col, the matmuls, col2im, layout moves): each output
/// sums n terms (forward C·k·k + the bias, weight and bias gradients rows·pixels, input
/// gradient O·k·k), so 2·γ_n·Σ|terms|, Σ|terms| from the same conv on absolute values.
fn conv_checks() -> Vec<Check> {
    // (rows, channels, height, width, kernel, stride, padding, outputs)
    let cases =
        [(3, 5, 7, 6, 3, 2, 1, 7), (16, 1, 28, 28, 5, 1, 0, 32), (8, 16, 16, 16, 3, 1, 1, 32)];
    cases
        .into_iter()
        .map(|(rows, ch, h, wd, k, s, p, o)| {
            let shapes = format!("{rows}x{ch}x{h}x{wd}, {o} filters {k}x{k} stride {s} pad {p}");
            Check::new("conv2d forward + backward", shapes, move |cpu, gpu, c| {
                let w = Window::square(ch, h, wd, k, s, p);
                let mut rng = fastrand::Rng::with_seed((rows * ch * k) as u64);
                let x = random(&mut rng, rows * w.in_len());
                let weight = random(&mut rng, o * w.patch_len());
                let bias = random(&mut rng, o);
                let out_len = rows * o * w.out_pixels();
                let dy = random(&mut rng, out_len);
                let want = conv_outputs(cpu, &w, rows, o, &x, &weight, &bias, &dy)?;
                let mut got = conv_outputs(gpu, &w, rows, o, &x, &weight, &bias, &dy)?;
                inject("conv2d forward + backward", &mut got);
                let sums = conv_outputs(
                    cpu,
                    &w,
                    rows,
                    o,
                    &abs(&x),
                    &abs(&weight),
                    &abs(&bias),
                    &abs(&dy),
                )?;
                let sizes = [
                    (out_len, w.patch_len() + 1),
                    (weight.len(), rows * w.out_pixels()),
                    (o, rows * w.out_pixels()),
                    (x.len(), o * k * k),
                ];
                let mut bound = Vec::with_capacity(sums.len());
                let mut at = 0;
                for (len, n) in sizes {
                    bound.extend(sum_bound(n, &sums[at..at + len]));
                    at += len;
                }
                c.add(&got, &want, &bound, f32::MIN_POSITIVE as f64);
                Ok(())
            })
        })
        .collect()
}

/// Max and average pooling with their backward passes: forward exact (a selection; the same
/// sum in the same order and one scale); backward sums up to k·k terms where windows overlap,
/// in other orders: 2·γ_(k·k)·Σ|dy| per input value, bounded here by the largest such sum.
fn pool_outputs<B: Backend>(
    b: &mut B,
    w: &Window,
    rows: usize,
    x: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>> {
    let out_len = rows * w.channels * w.out_pixels();
    let (gx, gdy) = (buf(b, x)?, buf(b, dy)?);
    let (y, idx, dx) = (b.alloc(out_len)?, b.alloc_indices(out_len)?, b.alloc(x.len())?);
    b.maxpool(&gx, &y, &idx, rows, w);
    b.maxpool_backward(&gdy, &idx, &dx, rows, w);
    let mut v = b.read(&y, out_len)?;
    v.extend(b.read(&dx, x.len())?);
    if w.pad_h + w.pad_w > 0 {
        // Average pooling takes no padding.
        return Ok(v);
    }
    b.avgpool(&gx, &y, rows, w);
    b.avgpool_backward(&gdy, &dx, rows, w);
    v.extend(b.read(&y, out_len)?);
    v.extend(b.read(&dx, x.len())?);
    Ok(v)
}

fn pool_checks() -> Vec<Check> {
    // (rows, channels, height, width, kernel, stride, padding): odd shapes, a CNN's at batch 128,
    // and resnet18's padded stem at batch 4 and 32 (25.7M inputs: past 65,535 workgroups, so
    // the dispatch folds into two dimensions). Padded windows check max pooling only.
    [
        (3, 5, 7, 5, 2, 2, 0),
        (2, 6, 9, 9, 3, 2, 0),
        (128, 32, 24, 24, 2, 2, 0),
        (4, 64, 112, 112, 3, 2, 1),
        (32, 64, 112, 112, 3, 2, 1),
    ]
    .into_iter()
    .map(|(rows, ch, h, wd, k, s, p)| {
        Check::new(
            "maxpool, avgpool (+ backward)",
            format!("{rows}x{ch}x{h}x{wd}, {k}x{k} stride {s} pad {p}"),
            move |cpu, gpu, c| {
                let w = Window::square(ch, h, wd, k, s, p);
                let mut rng = fastrand::Rng::with_seed((rows + ch + h) as u64);
                let x = random(&mut rng, rows * w.in_len());
                let dy = random(&mut rng, rows * ch * w.out_pixels());
                let want = pool_outputs(cpu, &w, rows, &x, &dy)?;
                let mut got = pool_outputs(gpu, &w, rows, &x, &dy)?;
                inject("maxpool, avgpool (+ backward)", &mut got);
                let largest = dy.iter().fold(0f32, |m, v| m.max(v.abs())) * (k * k) as f32;
                c.add(&got, &want, &sum_bound(k * k, &[largest]), 0.0);
                Ok(())
            },
        )
    })
    .collect()
}

/// Batch norm's four kernels: statistics, forward, the backward sums, the input gradient.
#[allow(clippy::too_many_arguments)]
fn bn_outputs<B: Backend>(
    b: &mut B,
    rows: usize,
    ch: usize,
    px: usize,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Result<Vec<f32>> {
    let (gx, gdy, gg, gb) = (buf(b, x)?, buf(b, dy)?, buf(b, gamma)?, buf(b, beta)?);
    let (saved, rm, rv) = (b.alloc(2 * ch)?, b.alloc(ch)?, buf(b, &vec![1.0; ch])?);
    let (y, dgg, dgb, dx) = (b.alloc(x.len())?, b.alloc(ch)?, b.alloc(ch)?, b.alloc(x.len())?);
    let h = BatchNormHyper { eps: 1e-5, momentum: 0.1, train: true };
    let shape = Nchw::new(rows, ch, px);
    b.batchnorm_stats(&gx, &saved, &rm, &rv, shape, &h);
    b.batchnorm_forward(&gx, &saved, &gg, &gb, &y, shape);
    b.batchnorm_backward_reduce(&gx, &gdy, &saved, &dgg, &dgb, shape);
    b.batchnorm_backward(&gx, &gdy, &saved, &gg, &dgg, &dgb, &dx, shape);
    let mut v = b.read(&saved, 2 * ch)?;
    for out in [(&y, x.len()), (&dgg, ch), (&dgb, ch), (&dx, x.len()), (&rm, ch), (&rv, ch)] {
        v.extend(b.read(out.0, out.1)?);
    }
    Ok(v)
}

/// The statistics and backward sums reduce M = rows·pixels values per channel in other orders:
/// 2·γ_M relative on sums of values of one sign, and the derived quantities inherit it (4·γ_M
/// on 1/√var, which a square root halves and a division doubles); the element-wise parts agree
/// to a few ulp. All outputs here are O(1), so one bound relative to M covers them: 8·γ_M·max|v|
/// plus 4 ulp.
fn batchnorm_check((rows, ch, px): (usize, usize, usize)) -> Check {
    Check::new(
        "batchnorm (stats, forward, backward)",
        format!("{rows}x{ch}x{px}"),
        move |cpu, gpu, c| {
            let mut rng = fastrand::Rng::with_seed(12);
            let x: Vec<f32> =
                random(&mut rng, rows * ch * px).iter().map(|v| 2.0 * v + 0.5).collect();
            let dy = random(&mut rng, x.len());
            let (gm, bt) = (random(&mut rng, ch), random(&mut rng, ch));
            let want = bn_outputs(cpu, rows, ch, px, &x, &dy, &gm, &bt)?;
            let mut got = bn_outputs(gpu, rows, ch, px, &x, &dy, &gm, &bt)?;
            inject("batchnorm (stats, forward, backward)", &mut got);
            let m = rows * px;
            // Outputs in order: saved [mean; inv_std], y, dgamma, dbeta, dx, running mean, var.
            let sizes = [2 * ch, x.len(), ch, ch, x.len(), ch, ch];
            // dgamma and dbeta are sums over M terms, dy·x̂ and dy: 2·γ_M·Σ|terms| per channel.
            let (mean, inv_std) = (&want[..ch], &want[ch..2 * ch]);
            let (mut sum_dy, mut sum_dyx) = (vec![0f32; ch], vec![0f32; ch]);
            for (i, (&xv, &d)) in x.iter().zip(&dy).enumerate() {
                let k = (i / px) % ch;
                sum_dy[k] += d.abs();
                sum_dyx[k] += (d * (xv - mean[k]) * inv_std[k]).abs();
            }
            let mut at = 0;
            for (group, len) in sizes.into_iter().enumerate() {
                let (g, w) = (&got[at..at + len], &want[at..at + len]);
                match group {
                    2 => c.add(g, w, &sum_bound(m, &sum_dyx), 0.0),
                    3 => c.add(g, w, &sum_bound(m, &sum_dy), 0.0),
                    // The rest are O(1) values computed from those sums (means, 1/√var and the
                    // per-channel sums divided by M): 8·γ_M of the group's largest |value|,
                    // plus 4 ulp for FMA contraction in the element-wise expressions.
                    _ => {
                        let scale = w.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                        c.add(g, w, &[8.0 * gamma(m) * scale], 4.0 * U * scale);
                    }
                }
                at += len;
            }
            Ok(())
        },
    )
}

/// Softmax cross-entropy: per row the same formula (exp and log a few ulp off correctly rounded
/// in WGSL): gradients agree to rtol 1e-5 + 1e-6/rows; the loss sum adds rows per-row losses in
/// other orders: rtol 1e-5 + 2·γ_rows; correct and sample counts are integers and exact. With
/// label smoothing ε the per-row formula adds ε/cols·Σx, summed in the same order on both sides.
fn loss_check(smoothing: f32) -> Check {
    let (rows, cols) = (1000, 10);
    let shapes = match smoothing {
        0.0 => format!("{rows}x{cols}"),
        eps => format!("{rows}x{cols}, label smoothing {eps}"),
    };
    Check::new("softmax_xent", shapes, move |cpu, gpu, c| {
        let mut rng = fastrand::Rng::with_seed(13);
        let logits: Vec<f32> = random(&mut rng, rows * cols).iter().map(|v| v * 8.0).collect();
        let labels: Vec<u32> = (0..rows).map(|_| rng.u32(0..cols as u32)).collect();
        fn go<B: Backend>(
            b: &mut B,
            logits: &[f32],
            labels: &[u32],
            (rows, cols, smoothing): (usize, usize, f32),
        ) -> Result<(Vec<f32>, Vec<f32>)> {
            let gl = buf(b, logits)?;
            let lb = b.alloc_indices(rows)?;
            b.write_indices(&lb, labels);
            let (grad, stats) = (b.alloc(rows * cols)?, b.alloc(3)?);
            b.fill_zero(&stats);
            b.softmax_xent(&gl, &lb, &grad, &stats, rows, cols, smoothing);
            Ok((b.read(&grad, rows * cols)?, b.read(&stats, 3)?))
        }
        let (wg, ws) = go(cpu, &logits, &labels, (rows, cols, smoothing))?;
        let (mut gg, gs) = go(gpu, &logits, &labels, (rows, cols, smoothing))?;
        inject("softmax_xent", &mut gg);
        c.relative(&gg, &wg, 1e-5, 1e-6 / rows as f64);
        c.relative(&gs[..1], &ws[..1], 1e-5 + 2.0 * gamma(rows), 0.0);
        c.exact(&gs[1..], &ws[1..]);
        Ok(())
    })
}

/// Five updates of each optimizer: the same f32 operations in the same order on both sides
/// (WGSL's sqrt and division within an ulp or two), fed back for 5 steps: rtol 1e-5, atol 1e-6.
fn optimizer_checks() -> Vec<Check> {
    let kinds = ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"];
    kinds
        .into_iter()
        .map(|kind| {
            let len = 1031;
            Check::new(
                format!("{kind} update"),
                format!("{len} values, 5 steps"),
                move |cpu, gpu, c| {
                    fn go<B: Backend>(
                        b: &mut B,
                        kind: &str,
                        p: &[f32],
                        grads: &[Vec<f32>],
                    ) -> Result<Vec<f32>> {
                        let len = p.len();
                        let (gp, s1, s2) = (buf(b, p)?, b.alloc(len)?, b.alloc(len)?);
                        for (t, g) in grads.iter().enumerate() {
                            let gg = buf(b, g)?;
                            let step = t as i32 + 1;
                            match kind {
                                "adam" | "adamw" => {
                                    let h = AdamHyper {
                                        lr: 1e-2,
                                        beta1: 0.9,
                                        beta2: 0.999,
                                        eps: 1e-8,
                                        weight_decay: 1e-2,
                                        decoupled: kind == "adamw",
                                        bias_correction1: (1.0 - 0.9f64.powi(step)) as f32,
                                        bias_correction2: (1.0 - 0.999f64.powi(step)) as f32,
                                    };
                                    b.adam_update(&gp, &gg, &s1, &s2, len, &h);
                                }
                                "rmsprop" => {
                                    let h = RmspropHyper {
                                        lr: 1e-2,
                                        alpha: 0.99,
                                        eps: 1e-8,
                                        weight_decay: 1e-4,
                                        momentum: 0.5,
                                    };
                                    b.rmsprop_update(&gp, &gg, &s1, &s2, len, &h);
                                }
                                _ => {
                                    let h = SgdHyper {
                                        lr: 0.1,
                                        momentum: if kind == "sgd" { 0.0 } else { 0.9 },
                                        weight_decay: 1e-4,
                                        nesterov: kind == "nesterov",
                                        first_step: step == 1,
                                    };
                                    b.sgd_update(&gp, &gg, &s1, len, &h);
                                }
                            }
                        }
                        b.read(&gp, len)
                    }
                    let mut rng = fastrand::Rng::with_seed(14);
                    let p = random(&mut rng, len);
                    let grads: Vec<Vec<f32>> = (0..5).map(|_| random(&mut rng, len)).collect();
                    let want = go(cpu, kind, &p, &grads)?;
                    let mut got = go(gpu, kind, &p, &grads)?;
                    inject(&format!("{kind} update"), &mut got);
                    c.relative(&got, &want, 1e-5, 1e-6);
                    Ok(())
                },
            )
        })
        .collect()
}

/// Twenty steps of `lenet` on synthetic data, batch 32, Adam, on both devices from the same
/// init: the per-step losses (read after each step) agree to 1e-3 relative, as the training
/// tests require (the kernels differ only in summation order).
pub fn lenet_steps(cpu: &mut CpuBackend, gpu: &mut GpuBackend) -> Result<Outcome> {
    let started = Instant::now();
    let data = crate::data::synthetic::generate(2, 640, 0);
    let spec: ModelSpec = "lenet".parse()?;
    fn go<B: Backend>(
        b: &mut B,
        data: &crate::data::Dataset,
        spec: &ModelSpec,
    ) -> Result<Vec<f32>> {
        use crate::nn::Workspace;
        use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
        let model = Model::new(b, spec, data.input_shape(), data.num_classes, 5)?;
        let batch = 32;
        let ws = Workspace::new(b, &model, batch)?;
        let stats = b.alloc(3)?;
        let mut cfg = OptimizerConfig::new(OptimizerKind::Adam);
        cfg.lr = 1e-3;
        let mut opt = Optimizer::new(b, cfg, &model)?;
        let mut losses = Vec::new();
        let size = data.sample_size();
        for step in 0..20 {
            let at = (step * batch) % (data.train.len - batch);
            let labels: Vec<u32> =
                data.train.labels[at..at + batch].iter().map(|&l| l as u32).collect();
            let pixels = data.train.images().expect("synthetic data is in memory");
            ws.load_batch(b, &pixels[at * size..(at + batch) * size], &labels);
            b.fill_zero(&stats);
            crate::train::train_step(b, &model, &ws, &mut opt, &stats, batch, cfg.lr);
            losses.push(crate::train::Metrics::from_stats(&b.read(&stats, 3)?).loss);
        }
        Ok(losses)
    }
    let want = go(cpu, &data, &spec)?;
    let mut got = go(gpu, &data, &spec)?;
    inject("lenet training", &mut got);
    let mut c = Compare::default();
    c.relative(&got, &want, 1e-3, 0.0);
    Ok(Outcome {
        kernel: "lenet training".into(),
        shapes: "20 steps, batch 32, Adam".into(),
        max_error: c.max_error,
        bound: c.bound,
        ratio: c.ratio,
        seconds: started.elapsed().as_secs_f64(),
        skipped: None,
    })
}

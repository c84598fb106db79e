//! `matmul_ab`, `matmul_atb`, `matmul_abt` in each variant (shaders/matmul.wgsl `tiled`,
//! matmul_register.wgsl, matmul_wide.wgsl) against the CPU twin (src/cpu/matmul.rs): over shapes
//! with 1s, primes and non-multiples of the tiles; at every matmul shape a training step of the
//! presets runs at batch 128 and 256; and at long K (a conv's weight gradient sums over
//! batch × pixels: K = 73,728 for LeNet's first conv at batch 128, 262,144 for cifar-cnn's at
//! 256). lavapipe once returned partial sums from K ≈ 58,000 on (llvmpipe's loop limit, see
//! shaders/matmul_common.wgsl): the long-K cases are the ones that would have caught it.
//!
//! Tolerance: both sides sum k products in f32, in different orders (tiles, K ranges and FMA on
//! the GPU, matrixmultiply's blocking on the CPU). The classic bound for a k-term dot product is
//! |error| <= γ_k · Σ|a_p·b_p| with γ_k = k·u/(1 - k·u), u = 2⁻²⁴, for each side; the difference
//! of two such results is at most twice that. We check each element against exactly that bound,
//! computed from |A|·|B|, so the test is as strict as f32 allows and still fails for any
//! wrong index, transpose, dropped K range or missing term (those give errors of order |A|·|B|).

mod common;

use common::{gpu, random, U};
use steepest::backend::{Backend, MatmulForm};
use steepest::cpu::matmul::matmul;
use steepest::cpu::CpuBackend;
use steepest::gpu::matmul::MatmulVariant;
use steepest::gpu::GpuBackend;
use steepest::nn::{Model, ModelSpec, Shape};

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (33, 65, 17),
    (64, 16, 64),
    (130, 257, 63),
    (1, 300, 1),
    (65, 1, 129),
    (128, 784, 256),
    (4, 8, 4),
    (132, 36, 260),
    (256, 1024, 132),
];

/// Checks `g`'s matmul of random operands against the CPU within the bound above; returns the
/// largest |diff| / tolerance seen.
fn check(
    g: &mut GpuBackend,
    rng: &mut fastrand::Rng,
    form: MatmulForm,
    m: usize,
    k: usize,
    n: usize,
    what: &str,
) -> f32 {
    check_op(g, rng, form, [m, k, n], None, what)
}

/// [`check`], or with `relu` given, `matmul_bias` (a random bias, then ReLU when `relu`)
/// against the CPU's matmul then add_bias: the same bound plus one rounding of the bias add on
/// each side, 2u·|C|.
fn check_op(
    g: &mut GpuBackend,
    rng: &mut fastrand::Rng,
    form: MatmulForm,
    [m, k, n]: [usize; 3],
    relu: Option<bool>,
    what: &str,
) -> f32 {
    let a = random(rng, m * k);
    let b = random(rng, k * n);
    let bias = random(rng, n);
    let mut want = vec![0.0; m * n];
    matmul(form, &a, &b, &mut want, m, k, n);
    if let Some(relu) = relu {
        for row in want.chunks_exact_mut(n) {
            for (v, &bv) in row.iter_mut().zip(&bias) {
                *v += bv;
                if relu {
                    *v = v.max(0.0);
                }
            }
        }
    }
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut bound = vec![0.0; m * n];
    matmul(form, &abs(&a), &abs(&b), &mut bound, m, k, n);

    let (ga, gb, gc) =
        (g.alloc(a.len()).unwrap(), g.alloc(b.len()).unwrap(), g.alloc(m * n).unwrap());
    g.write(&ga, &a);
    g.write(&gb, &b);
    match relu {
        None => g.matmul(form, &ga, &gb, &gc, m, k, n),
        Some(relu) => {
            let gbias = g.alloc(n).unwrap();
            g.write(&gbias, &bias);
            g.matmul_bias(form, &ga, &gb, &gc, [m, k, n], &gbias, relu);
        }
    }
    let got = g.read(&gc, m * n).unwrap();

    let kf = k as f32;
    let gamma = kf * U / (1.0 - kf * U);
    let plan = g.matmul_plan(form, m, k, n);
    let mut worst = 0.0f32;
    for i in 0..m * n {
        let rounding = if relu.is_some() { 2.0 * U * want[i].abs() } else { 0.0 };
        let tol = 2.0 * gamma * bound[i] + rounding + f32::MIN_POSITIVE;
        let diff = (got[i] - want[i]).abs();
        assert!(
            diff <= tol,
            "{} {m}x{k}x{n} ({what}, {plan:?}) at ({}, {}): gpu {} cpu {} (tol {tol})",
            form.name(),
            i / n,
            i % n,
            got[i],
            want[i]
        );
        worst = worst.max(diff / tol);
    }
    worst
}

#[test]
fn every_variant_matches_cpu_on_odd_shapes() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(1);
    for variant in MatmulVariant::ALL {
        g.force_matmul_variant(Some(variant));
        for form in MatmulForm::ALL {
            for &(m, k, n) in SHAPES {
                check(&mut g, &mut rng, form, m, k, n, variant.name());
            }
        }
    }
}

/// The shapes a training step of each preset runs, at batch 128 and 256, with the kernels and
/// K splits this adapter picks for them (what training runs); the forward shapes also through
/// `matmul_bias`.
#[test]
fn matmul_matches_cpu_at_every_training_shape() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(3);
    let models = [
        ("mlp:256", Shape::new(1, 28, 28)),
        ("lenet", Shape::new(1, 28, 28)),
        ("cifar-cnn", Shape::new(3, 32, 32)),
        ("resnet8", Shape::new(3, 32, 32)),
        ("resnet20", Shape::new(3, 32, 32)),
    ];
    let mut cpu = CpuBackend::new();
    // ResNet blocks repeat shapes: each (plan kind, form, shape) once.
    let mut seen = std::collections::HashSet::new();
    // Linear forwards alternate with and without the ReLU (a classifier's last layer has none).
    let mut relu = true;
    let (max_bytes, mut skipped, mut checked) = (g.max_bytes_per_buffer() as u64, 0, 0);
    // Under this adapter's plans and a discrete GPU's (wide kernels, up to 64 K ranges side by
    // side), so that lavapipe checks the plans a real GPU runs too.
    for (name, input, software) in
        models.into_iter().flat_map(|(s, i)| [(s, i, true), (s, i, false)])
    {
        g.plan_as_software(Some(software));
        let spec: ModelSpec = name.parse().unwrap();
        let model = Model::new(&mut cpu, &spec, input, 10, 0).unwrap();
        for batch in [128, 256] {
            for (form, m, k, n, what) in model.matmul_shapes(batch) {
                if !seen.insert((software, form.name(), m, k, n)) {
                    continue;
                }
                // A model this adapter cannot train at this batch (lavapipe's 128 MiB binding:
                // resnet's 16-channel 3×3 patches at batch 256 are 151 MB) is not checked here.
                if [m * k, k * n, m * n].iter().any(|&len| 4 * len as u64 > max_bytes) {
                    eprintln!("skipped: {name} batch {batch} {what}: over one buffer here");
                    skipped += 1;
                    continue;
                }
                let what = format!("{name} batch {batch} {what} (software plan {software})");
                check(&mut g, &mut rng, form, m, k, n, &what);
                checked += 1;
                // A Linear or conv forward runs as matmul_bias: its epilogue at the same shape.
                if form == MatmulForm::ABt {
                    check_op(&mut g, &mut rng, form, [m, k, n], Some(relu), &what);
                    relu = !relu;
                }
            }
        }
    }
    // Every preset at batch 128 fits any adapter; only batch-256 ResNet shapes may be skipped.
    assert!(checked > 100 && skipped < checked / 4, "{checked} checked, {skipped} skipped");
}

/// Long K (conv weight gradients up to cifar-cnn's first conv at batch 256, and beyond), long
/// and wide M and N (4096 and 100,000), in every variant.
#[test]
fn every_variant_matches_cpu_at_long_k_and_wide_shapes() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(4);
    let shapes = [
        (MatmulForm::AtB, 8, 73_728, 28),
        (MatmulForm::AtB, 32, 150_000, 28),
        (MatmulForm::AtB, 32, 262_144, 28),
        (MatmulForm::AB, 4, 200_000, 4),
        (MatmulForm::ABt, 4, 200_000, 4),
        (MatmulForm::AB, 4096, 16, 4096),
        (MatmulForm::ABt, 100_000, 8, 16),
        (MatmulForm::AtB, 16, 8, 4096),
    ];
    for variant in MatmulVariant::ALL {
        g.force_matmul_variant(Some(variant));
        for &(form, m, k, n) in &shapes {
            check(&mut g, &mut rng, form, m, k, n, variant.name());
        }
    }
}

#[test]
fn cpu_matmul_forms_agree_with_a_naive_loop() {
    let mut rng = fastrand::Rng::with_seed(2);
    for form in MatmulForm::ALL {
        for &(m, k, n) in &SHAPES[..5] {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, k * n);
            let mut got = vec![0.0; m * n];
            matmul(form, &a, &b, &mut got, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0f64;
                    for p in 0..k {
                        let av = if form == MatmulForm::AtB { a[p * m + i] } else { a[i * k + p] };
                        let bv = if form == MatmulForm::ABt { b[j * k + p] } else { b[p * n + j] };
                        s += av as f64 * bv as f64;
                    }
                    let tol = (k as f64) * 1e-6 + 1e-6;
                    assert!(
                        (got[i * n + j] as f64 - s).abs() <= tol,
                        "{} {m}x{k}x{n}",
                        form.name()
                    );
                }
            }
        }
    }
}

/// `matmul_bias` (a Linear forward: the bias and ReLU applied as C is stored) gives bit for bit
/// what `matmul` then `add_bias` give on the GPU, in every variant and in each way the last pass
/// can be run: the matmul kernel itself (one K range), `sum_splits` (K split side by side), and
/// passes one after another (scratch and K ranges capped, so the epilogue falls back to `add_bias`). It
/// also stays within the matmul bound above of the CPU's (plus one rounding of the bias add
/// on each side: 2u·|C|). The biases are large enough that ReLU clips about half of the outputs.
#[test]
fn matmul_bias_is_matmul_then_add_bias_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut cpu = CpuBackend::new();
    let mut rng = fastrand::Rng::with_seed(5);
    // (form, m, k, n, scratch cap in floats: 0 leaves the adapter's; the cap also cuts K into
    // ranges of 4,096 at most, so that the capped cases run as passes one after another)
    let cases = [
        (MatmulForm::ABt, 128, 784, 256, 0),
        (MatmulForm::ABt, 128, 256, 10, 0),
        (MatmulForm::ABt, 7, 13, 5, 0),
        (MatmulForm::ABt, 130, 257, 63, 0),
        (MatmulForm::AB, 64, 64, 132, 0),
        (MatmulForm::ABt, 8, 40_000, 24, 0),
        (MatmulForm::ABt, 8, 40_000, 24, 2 * 8 * 24),
        (MatmulForm::AtB, 24, 20_000, 16, 3 * 24 * 16),
    ];
    for variant in MatmulVariant::ALL {
        g.force_matmul_variant(Some(variant));
        for &(form, m, k, n, cap) in &cases {
            g.limit_split_scratch((cap > 0).then_some((cap, 4_096)));
            let plan = g.matmul_plan(form, m, k, n);
            assert_eq!(cap > 0, plan.ranges > plan.splits, "{plan:?}: passes only when capped");
            if k == 40_000 && cap == 0 {
                assert!(plan.splits > 1, "{plan:?}: the case that reaches sum_splits' epilogue");
            }
            let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
            let bias: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect();
            for relu in [false, true] {
                let what = format!("{} {m}x{k}x{n} relu {relu} ({plan:?})", form.name());
                let mut on_gpu = |fused: bool| {
                    let [ga, gb, gbias, gc] =
                        [&a[..], &b, &bias, &vec![f32::NAN; m * n]].map(|v| {
                            let x = g.alloc(v.len()).unwrap();
                            g.write(&x, v);
                            x
                        });
                    if fused {
                        g.matmul_bias(form, &ga, &gb, &gc, [m, k, n], &gbias, relu);
                    } else {
                        g.matmul(form, &ga, &gb, &gc, m, k, n);
                        g.add_bias(&gc, &gbias, m, n, relu);
                    }
                    g.read(&gc, m * n).unwrap()
                };
                let fused = on_gpu(true);
                let unfused = on_gpu(false);
                if let Some(i) = (0..m * n).find(|&i| fused[i].to_bits() != unfused[i].to_bits()) {
                    panic!("{what}: C[{i}] fused {} unfused {}", fused[i], unfused[i]);
                }
                let clipped = fused.iter().filter(|&&v| v == 0.0).count();
                assert!(!relu || (clipped > 0 && clipped < m * n) || m * n < 64, "{what}");

                let (ca, cb, cbias, cc) = (
                    cpu.alloc(m * k).unwrap(),
                    cpu.alloc(k * n).unwrap(),
                    cpu.alloc(n).unwrap(),
                    cpu.alloc(m * n).unwrap(),
                );
                cpu.write(&ca, &a);
                cpu.write(&cb, &b);
                cpu.write(&cbias, &bias);
                cpu.matmul_bias(form, &ca, &cb, &cc, [m, k, n], &cbias, relu);
                let want = cpu.read(&cc, m * n).unwrap();
                let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                let mut bound = vec![0.0; m * n];
                matmul(form, &abs(&a), &abs(&b), &mut bound, m, k, n);
                let gamma = k as f32 * U / (1.0 - k as f32 * U);
                for i in 0..m * n {
                    let tol = 2.0 * gamma * bound[i] + 2.0 * U * want[i].abs() + f32::MIN_POSITIVE;
                    let diff = (fused[i] - want[i]).abs();
                    assert!(
                        diff <= tol,
                        "{what} at {i}: gpu {} cpu {} (tol {tol})",
                        fused[i],
                        want[i]
                    );
                }
            }
        }
    }
}

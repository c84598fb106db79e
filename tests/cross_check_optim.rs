//! `sgd_update`, `adam_update`, `rmsprop_update` (shaders/optim.wgsl) against their CPU twins
//! (src/cpu/optim.rs) over several steps and hyperparameter combinations, plus the CPU rules
//! against PyTorch's update equations written out by hand.
//!
//! Tolerance: both sides do the same f32 operations in the same order; only WGSL's `sqrt`
//! and division may differ from correctly rounded by an ulp or two, and the result feeds back for
//! 5 steps, so parameters agree to rtol 1e-5 and atol 1e-6 (values are O(1), updates O(lr)).

mod common;

use common::{assert_close, gpu, random};
use steepest::backend::{AdamHyper, Backend, RmspropHyper, SgdHyper};
use steepest::cpu::optim;
use steepest::gpu::GpuBackend;

const LEN: usize = 1031; // a prime above the 256-thread workgroup

struct Case {
    p: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
}

fn start(rng: &mut fastrand::Rng) -> Case {
    Case { p: random(rng, LEN), s1: vec![0.0; LEN], s2: vec![0.0; LEN] }
}

fn gpu_bufs(g: &mut GpuBackend, c: &Case) -> [steepest::gpu::GpuBuf; 4] {
    let bufs = [
        g.alloc(LEN).unwrap(),
        g.alloc(LEN).unwrap(),
        g.alloc(LEN).unwrap(),
        g.alloc(LEN).unwrap(),
    ];
    g.write(&bufs[0], &c.p);
    bufs
}

#[test]
fn sgd_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(8);
    for (momentum, nesterov, wd) in
        [(0.0, false, 0.0), (0.9, false, 0.0), (0.9, true, 1e-2), (0.5, false, 0.1)]
    {
        let mut c = start(&mut rng);
        let [p, grad, s1, _] = gpu_bufs(&mut g, &c);
        for step in 1..=5 {
            let gv = random(&mut rng, LEN);
            let h =
                SgdHyper { lr: 0.1, momentum, weight_decay: wd, nesterov, first_step: step == 1 };
            optim::sgd_update(&mut c.p, &gv, &mut c.s1, &h);
            g.write(&grad, &gv);
            g.sgd_update(&p, &grad, &s1, LEN, &h);
        }
        assert_close("sgd param", &g.read(&p, LEN).unwrap(), &c.p, 1e-6, 1e-5);
        if momentum > 0.0 {
            assert_close("sgd momentum", &g.read(&s1, LEN).unwrap(), &c.s1, 1e-6, 1e-5);
        }
    }
}

#[test]
fn adam_and_adamw_match_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(9);
    for (decoupled, wd) in [(false, 0.0), (false, 0.05), (true, 0.01), (true, 0.0)] {
        let mut c = start(&mut rng);
        let [p, grad, m, v] = gpu_bufs(&mut g, &c);
        for t in 1..=5 {
            let gv = random(&mut rng, LEN);
            let h = AdamHyper {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                decoupled,
                bias_correction1: 1.0 - 0.9f32.powi(t),
                bias_correction2: 1.0 - 0.999f32.powi(t),
            };
            optim::adam_update(&mut c.p, &gv, &mut c.s1, &mut c.s2, &h);
            g.write(&grad, &gv);
            g.adam_update(&p, &grad, &m, &v, LEN, &h);
        }
        assert_close("adam param", &g.read(&p, LEN).unwrap(), &c.p, 1e-6, 1e-5);
        assert_close("adam m", &g.read(&m, LEN).unwrap(), &c.s1, 1e-7, 1e-5);
        assert_close("adam v", &g.read(&v, LEN).unwrap(), &c.s2, 1e-8, 1e-5);
    }
}

#[test]
fn rmsprop_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(10);
    for (momentum, wd) in [(0.0, 0.0), (0.9, 0.0), (0.5, 0.01)] {
        let mut c = start(&mut rng);
        let [p, grad, sq, buf] = gpu_bufs(&mut g, &c);
        for _ in 0..5 {
            let gv = random(&mut rng, LEN);
            let h = RmspropHyper { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: wd, momentum };
            optim::rmsprop_update(&mut c.p, &gv, &mut c.s1, &mut c.s2, &h);
            g.write(&grad, &gv);
            g.rmsprop_update(&p, &grad, &sq, &buf, LEN, &h);
        }
        assert_close("rmsprop param", &g.read(&p, LEN).unwrap(), &c.p, 1e-6, 1e-5);
        assert_close("rmsprop square_avg", &g.read(&sq, LEN).unwrap(), &c.s1, 1e-8, 1e-5);
    }
}

/// The CPU rules, checked against PyTorch's documented algorithms on one scalar, in f64.
#[test]
fn cpu_rules_follow_torch_optim() {
    let (p0, g1, g2) = (0.5f64, 0.2f64, -0.4f64);
    // SGD, momentum 0.9, nesterov, weight decay 0.1, lr 0.1: two steps.
    let (mut p, mut v) = ([p0 as f32], [0.0f32]);
    for (t, g) in [g1, g2].iter().enumerate() {
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.1,
            nesterov: true,
            first_step: t == 0,
        };
        optim::sgd_update(&mut p, &[*g as f32], &mut v, &h);
    }
    let d1 = g1 + 0.1 * p0;
    let b1 = d1;
    let p1 = p0 - 0.1 * (d1 + 0.9 * b1);
    let d2 = g2 + 0.1 * p1;
    let b2 = 0.9 * b1 + d2;
    let p2 = p1 - 0.1 * (d2 + 0.9 * b2);
    assert!((p[0] as f64 - p2).abs() < 1e-6, "sgd {} vs {p2}", p[0]);

    // Adam, lr 0.01, one step: the first step moves by lr·sign(g) (m̂/√v̂ = g/|g|).
    let (mut p, mut m, mut v) = ([p0 as f32], [0.0f32], [0.0f32]);
    let h = AdamHyper {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
    };
    optim::adam_update(&mut p, &[g1 as f32], &mut m, &mut v, &h);
    assert!((p[0] as f64 - (p0 - 0.01)).abs() < 1e-6, "adam {}", p[0]);

    // AdamW decays before the Adam step: p·(1 - lr·wd) - lr·sign(g).
    let (mut p, mut m, mut v) = ([p0 as f32], [0.0f32], [0.0f32]);
    let h = AdamHyper { weight_decay: 0.5, decoupled: true, ..h };
    optim::adam_update(&mut p, &[g1 as f32], &mut m, &mut v, &h);
    assert!((p[0] as f64 - (p0 * (1.0 - 0.005) - 0.01)).abs() < 1e-6, "adamw {}", p[0]);

    // RMSprop, alpha 0.99: v = 0.01·g², p -= lr·g/(√v + eps).
    let (mut p, mut sq, mut buf) = ([p0 as f32], [0.0f32], [0.0f32]);
    let h = RmspropHyper { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0 };
    optim::rmsprop_update(&mut p, &[g1 as f32], &mut sq, &mut buf, &h);
    let want = p0 - 0.01 * g1 / ((0.01 * g1 * g1).sqrt() + 1e-8);
    assert!((p[0] as f64 - want).abs() < 1e-6, "rmsprop {} vs {want}", p[0]);
}

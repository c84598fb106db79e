//! `matmul_ab`, `matmul_atb`, `matmul_abt`: WGSL (shaders/matmul.wgsl) against the CPU twin
//! (src/cpu/matmul.rs) over shapes with 1s, primes and non-multiples of the 64×64×16 tile.
//!
//! Tolerance: both sides sum k products in f32, in different orders (tiles + FMA on the GPU,
//! matrixmultiply's blocking on the CPU). The classic bound for a k-term dot product is
//! |error| <= γ_k · Σ|a_p·b_p| with γ_k = k·u/(1 - k·u), u = 2⁻²⁴, for each side; the difference
//! of two such results is at most twice that. We check each element against exactly that bound,
//! computed from |A|·|B|, so the test is as strict as f32 allows and still fails for any
//! wrong index, transpose or missing term (those give errors of order |A|·|B| itself).

mod common;

use common::{gpu, random, U};
use steepest::backend::{Backend, MatmulForm};
use steepest::cpu::matmul::matmul;

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (33, 65, 17),
    (64, 16, 64),
    (130, 257, 63),
    (1, 300, 1),
    (65, 1, 129),
    (128, 784, 256),
];

#[test]
fn matmul_forms_match_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(1);
    for form in MatmulForm::ALL {
        for &(m, k, n) in SHAPES {
            let a = random(&mut rng, m * k);
            let b = random(&mut rng, k * n);
            let mut want = vec![0.0; m * n];
            matmul(form, &a, &b, &mut want, m, k, n);
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let mut bound = vec![0.0; m * n];
            matmul(form, &abs(&a), &abs(&b), &mut bound, m, k, n);

            let (ga, gb, gc) =
                (g.alloc(a.len()).unwrap(), g.alloc(b.len()).unwrap(), g.alloc(m * n).unwrap());
            g.write(&ga, &a);
            g.write(&gb, &b);
            g.matmul(form, &ga, &gb, &gc, m, k, n);
            let got = g.read(&gc, m * n).unwrap();

            let kf = k as f32;
            let gamma = kf * U / (1.0 - kf * U);
            for i in 0..m * n {
                let tol = 2.0 * gamma * bound[i] + f32::MIN_POSITIVE;
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "{} {m}x{k}x{n} at ({}, {}): gpu {} cpu {} (tol {tol})",
                    form.name(),
                    i / n,
                    i % n,
                    got[i],
                    want[i]
                );
            }
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

//! Splitting per-sample CPU work over the cores (matrixmultiply threads the matmuls itself).

/// Runs `f(first_sample, chunk)` over `out` cut into per-sample chunks of `per_sample` values,
/// one contiguous run of samples per thread.
pub fn for_samples<T: Send, F>(out: &mut [T], rows: usize, per_sample: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync,
{
    let out = &mut out[..rows * per_sample];
    let threads = crate::device::cpu_threads().min(rows).max(1);
    // Small jobs are not worth a thread.
    if threads == 1 || out.len() < 1 << 15 {
        f(0, out);
        return;
    }
    let per_thread = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (i, chunk) in out.chunks_mut(per_thread * per_sample).enumerate() {
            let f = &f;
            s.spawn(move || f(i * per_thread, chunk));
        }
    });
}

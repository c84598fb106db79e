//! Splitting CPU work over the cores, on rayon's pool: one contiguous run of samples (or
//! matrix rows) per thread, so each thread streams through its own memory.

use rayon::prelude::*;

/// Below this many output values a job is not worth waking the other threads for.
const SERIAL_BELOW: usize = 1 << 15;

/// Runs `f(first_sample, chunk)` over `out` cut into per-sample chunks of `per_sample` values,
/// one contiguous run of samples per thread.
pub fn for_samples<T: Send, F>(out: &mut [T], rows: usize, per_sample: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync,
{
    let out = &mut out[..rows * per_sample];
    let threads = threads().min(rows).max(1);
    if threads == 1 || out.len() < SERIAL_BELOW {
        f(0, out);
        return;
    }
    let per_thread = rows.div_ceil(threads);
    out.par_chunks_mut(per_thread * per_sample)
        .enumerate()
        .for_each(|(i, chunk)| f(i * per_thread, chunk));
}

/// [`for_samples`] over two outputs cut alike (e.g. pooled values and where they came from).
pub fn for_samples_pair<T: Send, U: Send, F>(
    a: &mut [T],
    b: &mut [U],
    rows: usize,
    per_sample: usize,
    f: F,
) where
    F: Fn(usize, &mut [T], &mut [U]) + Sync,
{
    let (a, b) = (&mut a[..rows * per_sample], &mut b[..rows * per_sample]);
    let threads = threads().min(rows).max(1);
    if threads == 1 || a.len() < SERIAL_BELOW {
        f(0, a, b);
        return;
    }
    let per_thread = rows.div_ceil(threads);
    a.par_chunks_mut(per_thread * per_sample)
        .zip(b.par_chunks_mut(per_thread * per_sample))
        .enumerate()
        .for_each(|(i, (ca, cb))| f(i * per_thread, ca, cb));
}

/// Threads the CPU path uses: rayon's pool, sized by `RAYON_NUM_THREADS`, else the core count.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// The sample ranges a conv's threads take: `rows` cut into one contiguous run per thread.
pub fn ranges(rows: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads().min(rows).max(1);
    let per = rows.div_ceil(threads);
    (0..threads)
        .map(|t| (t * per).min(rows)..((t + 1) * per).min(rows))
        .filter(|r| !r.is_empty())
        .collect()
}

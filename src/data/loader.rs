//! Mini-batches: a seeded shuffle per epoch and gathering of one batch into reused host buffers.

use super::Split;

/// Walks one split in batches. The last partial batch is kept, as PyTorch's DataLoader does,
/// unless `drop_last`.
pub struct Batcher<'a> {
    split: &'a Split,
    sample_size: usize,
    batch_size: usize,
    drop_last: bool,
    order: Vec<usize>,
    pos: usize,
    pixels: Vec<u8>,
    labels: Vec<u32>,
}

impl<'a> Batcher<'a> {
    pub fn new(split: &'a Split, sample_size: usize, batch_size: usize, drop_last: bool) -> Self {
        Batcher {
            split,
            sample_size,
            batch_size,
            drop_last,
            order: (0..split.len).collect(),
            pos: 0,
            pixels: Vec::with_capacity(batch_size * sample_size),
            labels: Vec::with_capacity(batch_size),
        }
    }

    pub fn steps_per_epoch(&self) -> usize {
        if self.drop_last {
            self.split.len / self.batch_size
        } else {
            self.split.len.div_ceil(self.batch_size)
        }
    }

    /// Samples one epoch visits.
    pub fn samples_per_epoch(&self) -> usize {
        if self.drop_last {
            self.steps_per_epoch() * self.batch_size
        } else {
            self.split.len
        }
    }

    /// Rewinds; with an RNG, reshuffles the order (a fresh permutation per epoch).
    pub fn start_epoch(&mut self, rng: Option<&mut fastrand::Rng>) {
        if let Some(rng) = rng {
            rng.shuffle(&mut self.order);
        }
        self.pos = 0;
    }

    /// The next batch's pixels and labels, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<(&[u8], &[u32])> {
        let left = self.split.len - self.pos;
        let rows = left.min(self.batch_size);
        if rows == 0 || (self.drop_last && rows < self.batch_size) {
            return None;
        }
        self.pixels.clear();
        self.labels.clear();
        for &i in &self.order[self.pos..self.pos + rows] {
            let start = i * self.sample_size;
            self.pixels.extend_from_slice(&self.split.images[start..start + self.sample_size]);
            self.labels.push(self.split.labels[i] as u32);
        }
        self.pos += rows;
        Some((&self.pixels, &self.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> Split {
        Split {
            images: (0..n * 2).map(|i| i as u8).collect(),
            labels: (0..n as u8).collect(),
            len: n,
        }
    }

    #[test]
    fn keeps_or_drops_the_last_partial_batch() {
        let s = split(10);
        let mut b = Batcher::new(&s, 2, 4, false);
        b.start_epoch(None);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| b.next_batch().map(|(_, l)| l.len())).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(b.steps_per_epoch(), 3);
        let mut b = Batcher::new(&s, 2, 4, true);
        b.start_epoch(None);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| b.next_batch().map(|(_, l)| l.len())).collect();
        assert_eq!(sizes, vec![4, 4]);
        assert_eq!(b.samples_per_epoch(), 8);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation_that_keeps_pixels_with_labels() {
        let s = split(10);
        let epoch = |seed| {
            let mut b = Batcher::new(&s, 2, 3, false);
            let mut rng = fastrand::Rng::with_seed(seed);
            b.start_epoch(Some(&mut rng));
            let mut labels = Vec::new();
            while let Some((px, l)) = b.next_batch() {
                for (j, &label) in l.iter().enumerate() {
                    assert_eq!(px[j * 2], (label * 2) as u8, "pixels travel with their label");
                }
                labels.extend_from_slice(l);
            }
            labels
        };
        let a = epoch(7);
        assert_eq!(a, epoch(7));
        assert_ne!(a, epoch(8));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<u32>>());
        assert_ne!(a, sorted, "a shuffle of 10 that leaves the order alone is very unlikely");
    }
}

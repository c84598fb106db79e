//! Mini-batches: a seeded shuffle per epoch and gathering of one batch into reused host buffers.

use std::fmt;
use std::str::FromStr;

use super::Split;
use crate::{Error, Result};

/// Training-time augmentation (`--augment crop:PAD,flip`), applied to the u8 pixels of each batch
/// on the host while the device trains on the previous one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Random crop after zero-padding every side by this many pixels (`crop:PAD`).
    pub crop_pad: usize,
    /// Mirror left-right with probability 1/2 (`flip`).
    pub flip: bool,
}

impl FromStr for Augment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut a = Augment::default();
        if s == "none" || s.is_empty() {
            return Ok(a);
        }
        for item in s.split(',') {
            match item.trim().split_once(':') {
                Some(("crop", pad)) => {
                    a.crop_pad = pad.parse().map_err(|_| {
                        Error::config("--augment", format!("crop padding {pad:?} is not a whole number; expected e.g. crop:4,flip"))
                    })?
                }
                None if item.trim() == "flip" => a.flip = true,
                _ => return Err(Error::config("--augment", format!("unknown augmentation {item:?}; expected none or a list of crop:PAD and flip"))),
            }
        }
        Ok(a)
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.crop_pad > 0 {
            parts.push(format!("crop:{}", self.crop_pad));
        }
        if self.flip {
            parts.push("flip".to_string());
        }
        if parts.is_empty() {
            parts.push("none".to_string());
        }
        write!(f, "{}", parts.join(","))
    }
}

/// Shifts one CHW image by (dy, dx) with zero fill (a crop of the zero-padded image) and mirrors
/// it when `flip`.
#[allow(clippy::too_many_arguments)]
pub fn augment_image(
    src: &[u8],
    dst: &mut [u8],
    channels: usize,
    height: usize,
    width: usize,
    dy: isize,
    dx: isize,
    flip: bool,
) {
    for c in 0..channels {
        for y in 0..height {
            let sy = y as isize + dy;
            for x in 0..width {
                let xx = if flip { width - 1 - x } else { x };
                let sx = xx as isize + dx;
                let inside = sy >= 0 && sx >= 0 && (sy as usize) < height && (sx as usize) < width;
                dst[(c * height + y) * width + x] =
                    if inside { src[(c * height + sy as usize) * width + sx as usize] } else { 0 };
            }
        }
    }
}

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
    /// Augmentation with its own seeded stream and the image shape (c, h, w).
    augment: Option<(Augment, fastrand::Rng, [usize; 3])>,
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
            augment: None,
        }
    }

    /// Augments every batch from now on, drawing from `seed`.
    pub fn with_augment(mut self, augment: Augment, seed: u64, shape: [usize; 3]) -> Self {
        if augment != Augment::default() {
            self.augment = Some((augment, fastrand::Rng::with_seed(seed), shape));
        }
        self
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
            let src = &self.split.images[start..start + self.sample_size];
            match &mut self.augment {
                None => self.pixels.extend_from_slice(src),
                Some((a, rng, [c, h, w])) => {
                    let pad = a.crop_pad as isize;
                    let (dy, dx) = if pad > 0 {
                        (rng.isize(-pad..=pad), rng.isize(-pad..=pad))
                    } else {
                        (0, 0)
                    };
                    let flip = a.flip && rng.bool();
                    let at = self.pixels.len();
                    self.pixels.resize(at + self.sample_size, 0);
                    augment_image(src, &mut self.pixels[at..], *c, *h, *w, dy, dx, flip);
                }
            }
            self.labels.push(self.split.labels[i] as u32);
        }
        self.pos += rows;
        Some((&self.pixels, &self.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augment_parses_shifts_and_flips() {
        assert_eq!("crop:4,flip".parse::<Augment>().unwrap(), Augment { crop_pad: 4, flip: true });
        assert_eq!("none".parse::<Augment>().unwrap(), Augment::default());
        assert!("crop:x".parse::<Augment>().unwrap_err().to_string().contains("--augment"));
        assert!("rotate".parse::<Augment>().unwrap_err().to_string().contains("--augment"));
        // 1 channel, 2x3 image.
        let src = [1, 2, 3, 4, 5, 6];
        let mut dst = [0; 6];
        augment_image(&src, &mut dst, 1, 2, 3, 0, 0, true);
        assert_eq!(dst, [3, 2, 1, 6, 5, 4]);
        augment_image(&src, &mut dst, 1, 2, 3, 1, -1, false);
        assert_eq!(dst, [0, 4, 5, 0, 0, 0]);
    }

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

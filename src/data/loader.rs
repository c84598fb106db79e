//! Mini-batches: a seeded shuffle per epoch and gathering of one batch into reused host buffers.

use std::fmt;
use std::str::FromStr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::folder::ImageFiles;
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
///
/// In-memory splits are gathered on the calling thread (a copy per sample). Splits backed by
/// image files are decoded by a background thread pool that runs up to [`PREFETCH_BATCHES`]
/// batches ahead through a bounded queue, so the device does not wait on JPEG decoding.
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
    /// This epoch's augmentation draws, one per visited sample in order.
    plan: Vec<Shift>,
    prefetch: Option<Prefetch>,
}

/// One sample's augmentation: shift (dy, dx) and mirror.
#[derive(Clone, Copy, Debug, Default)]
struct Shift {
    dy: isize,
    dx: isize,
    flip: bool,
}

impl Shift {
    /// As `gather_batch` takes it: `(dy + 128) | (dx + 128) << 8 | flip << 16`.
    fn code(self) -> u32 {
        encode_shift(self.dy, self.dx, self.flip)
    }
}

/// A batch code's augmentation from its parts (`|dy|, |dx| <= 127`); see `decode_shift`.
pub fn encode_shift(dy: isize, dx: isize, flip: bool) -> u32 {
    (dy + 128) as u32 | ((dx + 128) as u32) << 8 | (flip as u32) << 16
}

/// A batch code's augmentation: (dy, dx, flip); see `Batcher::next_codes`.
pub fn decode_shift(code: u32) -> (isize, isize, bool) {
    ((code & 255) as isize - 128, ((code >> 8) & 255) as isize - 128, (code >> 16) & 1 == 1)
}

/// How many decoded batches the background decoder may hold ready.
pub const PREFETCH_BATCHES: usize = 3;

impl<'a> Batcher<'a> {
    pub fn new(split: &'a Split, sample_size: usize, batch_size: usize, drop_last: bool) -> Self {
        Batcher {
            split,
            sample_size,
            batch_size,
            drop_last,
            order: (0..split.len).collect(),
            pos: 0,
            // A batch never holds more than the split (--batch-size 1000000000 on 256 samples).
            pixels: Vec::with_capacity(batch_size.min(split.len).saturating_mul(sample_size)),
            labels: Vec::with_capacity(batch_size.min(split.len)),
            augment: None,
            plan: Vec::new(),
            prefetch: None,
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

    /// Rewinds; with an RNG, reshuffles the order (a fresh permutation per epoch). Draws the
    /// epoch's augmentation up front, so decoding threads apply the same shifts as the
    /// in-memory path would.
    pub fn start_epoch(&mut self, rng: Option<&mut fastrand::Rng>) {
        self.start_epoch_at(rng, 0);
    }

    /// [`Batcher::start_epoch`], then skips the epoch's first `done` batches without reading
    /// them: where a resumed run left off inside an epoch.
    pub fn start_epoch_at(&mut self, rng: Option<&mut fastrand::Rng>, done: usize) {
        self.draw_epoch(rng);
        let visits = self.samples_per_epoch();
        self.pos = done.saturating_mul(self.batch_size).min(visits);
        if let Some(files) = self.split.files() {
            self.prefetch = Some(Prefetch::start(
                files.clone(),
                self.split.labels[..self.split.len].to_vec(),
                self.order[self.pos..visits].to_vec(),
                self.plan.get(self.pos..).unwrap_or_default().to_vec(),
                self.batch_size,
                self.augment.as_ref().map(|(_, _, s)| *s),
            ));
        }
    }

    /// Makes the draws of a whole epoch (its shuffle and augmentation) without visiting it, so
    /// that a resumed run's later epochs see the same batches as an uninterrupted run.
    pub fn skip_epoch(&mut self, rng: Option<&mut fastrand::Rng>) {
        self.draw_epoch(rng);
        self.pos = self.split.len;
    }

    fn draw_epoch(&mut self, rng: Option<&mut fastrand::Rng>) {
        self.prefetch = None;
        if let Some(rng) = rng {
            rng.shuffle(&mut self.order);
        }
        self.pos = 0;
        let visits = self.samples_per_epoch();
        self.plan.clear();
        if let Some((a, rng, _)) = &mut self.augment {
            let pad = a.crop_pad as isize;
            for _ in 0..visits {
                let (dy, dx) =
                    if pad > 0 { (rng.isize(-pad..=pad), rng.isize(-pad..=pad)) } else { (0, 0) };
                let flip = a.flip && rng.bool();
                self.plan.push(Shift { dy, dx, flip });
            }
        }
    }

    /// The next batch as codes for a device that holds the whole split (`gather_batch`): per
    /// sample its index and its augmentation (`decode_shift`), `[index, shift]` interleaved; or
    /// `None` at the end of the epoch. The same samples, order and shifts as `next_batch`.
    /// In-memory splits only.
    pub fn next_codes(&mut self) -> Option<&[u32]> {
        debug_assert!(self.split.images().is_some(), "file-backed splits stream their pixels");
        let left = self.split.len - self.pos;
        let rows = left.min(self.batch_size);
        if rows == 0 || (self.drop_last && rows < self.batch_size) {
            return None;
        }
        self.labels.clear();
        for (k, &i) in self.order[self.pos..self.pos + rows].iter().enumerate() {
            let shift = match &self.augment {
                None => Shift::default(),
                Some(_) => self.plan[self.pos + k],
            };
            self.labels.extend([i as u32, shift.code()]);
        }
        self.pos += rows;
        Some(&self.labels)
    }

    /// The next batch's pixels and labels, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<(&[u8], &[u32])> {
        if let Some(p) = &mut self.prefetch {
            let Ok((pixels, labels)) = p.rx.recv() else {
                // The decoder is done: the epoch is over, or it panicked and so must we.
                if let Some(worker) = p.worker.take() {
                    if let Err(panic) = worker.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                return None;
            };
            self.pixels = pixels;
            self.labels = labels;
            return Some((&self.pixels, &self.labels));
        }
        let left = self.split.len - self.pos;
        let rows = left.min(self.batch_size);
        if rows == 0 || (self.drop_last && rows < self.batch_size) {
            return None;
        }
        let images = self.split.images().expect("a file-backed split streams from start_epoch");
        self.pixels.clear();
        self.labels.clear();
        for (k, &i) in self.order[self.pos..self.pos + rows].iter().enumerate() {
            let src = &images[i * self.sample_size..(i + 1) * self.sample_size];
            match &self.augment {
                None => self.pixels.extend_from_slice(src),
                Some((_, _, [c, h, w])) => {
                    let s = self.plan[self.pos + k];
                    let at = self.pixels.len();
                    self.pixels.resize(at + self.sample_size, 0);
                    augment_image(src, &mut self.pixels[at..], *c, *h, *w, s.dy, s.dx, s.flip);
                }
            }
            self.labels.push(self.split.labels[i] as u32);
        }
        self.pos += rows;
        Some((&self.pixels, &self.labels))
    }
}

/// The background decoder of a file-backed split: one thread walks the epoch's batches, decodes
/// each batch's files on every core and queues it; the queue holds at most
/// [`PREFETCH_BATCHES`], so memory stays bounded however large the data set.
struct Prefetch {
    rx: Receiver<(Vec<u8>, Vec<u32>)>,
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    fn start(
        files: Arc<ImageFiles>,
        labels: Vec<u8>,
        order: Vec<usize>,
        plan: Vec<Shift>,
        batch_size: usize,
        augment_shape: Option<[usize; 3]>,
    ) -> Self {
        let (tx, rx) = sync_channel(PREFETCH_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_worker = stop.clone();
        let worker = std::thread::spawn(move || {
            let sample = files.sample_size();
            for (b, chunk) in order.chunks(batch_size).enumerate() {
                if stop_worker.load(Ordering::Relaxed) {
                    return;
                }
                let rows = chunk.len();
                let mut raw = vec![0u8; rows * sample];
                let ok = files.decode_batch(chunk, &mut raw, &stop_worker);
                let mut pixels = Vec::with_capacity(rows * sample);
                let mut batch_labels = Vec::with_capacity(rows);
                for k in (0..rows).filter(|&k| ok[k]) {
                    let src = &raw[k * sample..(k + 1) * sample];
                    match augment_shape {
                        None => pixels.extend_from_slice(src),
                        Some([c, h, w]) => {
                            let s = plan[b * batch_size + k];
                            let at = pixels.len();
                            pixels.resize(at + sample, 0);
                            augment_image(src, &mut pixels[at..], c, h, w, s.dy, s.dx, s.flip);
                        }
                    }
                    batch_labels.push(labels[chunk[k]] as u32);
                }
                // A batch whose every file failed is left out; the rest go on.
                if !batch_labels.is_empty() && tx.send((pixels, batch_labels)).is_err() {
                    return;
                }
            }
        });
        Prefetch { rx, stop, worker: Some(worker) }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Stop the decoder and unblock it if it waits on a full queue, then wait for it.
        self.stop.store(true, Ordering::Relaxed);
        while self.rx.try_recv().is_ok() {}
        if let Some(w) = self.worker.take() {
            // Drain until it exits: it may be blocked in `send` with a batch in hand.
            while !w.is_finished() {
                let _ = self.rx.recv_timeout(std::time::Duration::from_millis(10));
            }
            let _ = w.join();
        }
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
        Split::in_memory((0..n * 2).map(|i| i as u8).collect(), (0..n as u8).collect())
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

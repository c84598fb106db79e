//! Data sets held in memory as raw u8 pixels (NCHW) plus u8 labels; batches upload as bytes and
//! become f32 on the device (`pixels_to_f32`), so the host never builds f32 copies of a data set.

pub mod idx;
pub mod loader;
pub mod synthetic;

/// One split (train or test) of an image classification data set.
#[derive(Clone, Debug)]
pub struct Split {
    /// `len * channels * height * width` bytes, sample-major, channel-major inside a sample.
    pub images: Vec<u8>,
    /// One class index per sample, each `< num_classes`.
    pub labels: Vec<u8>,
    pub len: usize,
}

impl Split {
    /// Keeps the first `n` samples (for `--limit-train` / `--limit-test`).
    pub fn truncate(&mut self, n: usize, sample_bytes: usize) {
        if n < self.len {
            self.len = n;
            self.images.truncate(n * sample_bytes);
            self.labels.truncate(n);
        }
    }
}

/// A whole data set: train and test splits and the shape of one sample.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name printed in summaries and stored in checkpoints (`synthetic`, `mnist`, ...).
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    /// Bytes (and f32 inputs) per sample.
    pub fn sample_size(&self) -> usize {
        self.channels * self.height * self.width
    }
}

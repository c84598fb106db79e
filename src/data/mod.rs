//! Data sets held in memory as raw u8 pixels (NCHW) plus u8 labels; batches upload as bytes and
//! become f32 on the device (`pixels_to_f32`), so the host never builds f32 copies of a data set.

pub mod cifar;
pub mod download;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod synthetic;

/// Fixture folders for the data readers' unit tests.
#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system temp dir, removed when the test ends.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(test: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("steepest-data-test-{}-{n}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
        pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).expect("write fixture");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One split (train or test) of an image classification data set.
#[derive(Clone, Debug)]
pub struct Split {
    /// One class index per sample, each `< num_classes`.
    pub labels: Vec<u8>,
    pub len: usize,
    /// The pixels, held or to be decoded: one enum, so a file-backed split has no pixel buffer
    /// that could be read by mistake.
    pub samples: Samples,
}

/// Where a split's pixels are.
#[derive(Clone, Debug)]
pub enum Samples {
    /// `len * channels * height * width` bytes, sample-major, channel-major inside a sample.
    InMemory(Vec<u8>),
    /// For image folders too big to decode into memory: the files, decoded batch by batch as
    /// training reads them.
    Files(std::sync::Arc<folder::ImageFiles>),
}

impl Split {
    /// A split held in memory: `images` holds one sample per label.
    pub fn in_memory(images: Vec<u8>, labels: Vec<u8>) -> Split {
        Split { len: labels.len(), labels, samples: Samples::InMemory(images) }
    }

    /// The pixels of an in-memory split; `None` for one streamed from files.
    pub fn images(&self) -> Option<&[u8]> {
        match &self.samples {
            Samples::InMemory(images) => Some(images),
            Samples::Files(_) => None,
        }
    }

    /// The files of a split streamed from an image folder; `None` for an in-memory one.
    pub fn files(&self) -> Option<&std::sync::Arc<folder::ImageFiles>> {
        match &self.samples {
            Samples::InMemory(_) => None,
            Samples::Files(files) => Some(files),
        }
    }

    /// The samples whose label `relabel` maps to `Some(new label)`, relabelled, in order.
    pub fn select(&self, sample_bytes: usize, relabel: impl Fn(u8) -> Option<u8>) -> Split {
        let mut keep = Vec::new();
        let mut labels = Vec::new();
        for (i, &label) in self.labels[..self.len].iter().enumerate() {
            if let Some(new) = relabel(label) {
                keep.push(i);
                labels.push(new);
            }
        }
        let samples = match &self.samples {
            Samples::InMemory(images) => Samples::InMemory(
                keep.iter()
                    .flat_map(|&i| &images[i * sample_bytes..(i + 1) * sample_bytes])
                    .copied()
                    .collect(),
            ),
            Samples::Files(files) => Samples::Files(std::sync::Arc::new(files.select(&keep))),
        };
        Split { len: labels.len(), labels, samples }
    }

    /// Keeps the first `n` samples (for `--limit-train` / `--limit-test`). A file list, shared
    /// behind its `Arc`, keeps its paths: past `len` they are never read.
    pub fn truncate(&mut self, n: usize, sample_bytes: usize) {
        if n < self.len {
            self.len = n;
            if let Samples::InMemory(images) = &mut self.samples {
                images.truncate(n * sample_bytes);
            }
            self.labels.truncate(n);
        }
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Silences the warnings loading prints as it goes (a skipped unreadable image, a label seen
/// only in the test split): `--quiet`.
pub fn set_quiet(on: bool) {
    QUIET.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A loading warning on stderr, unless [`set_quiet`].
pub(crate) fn warn(message: std::fmt::Arguments<'_>) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("warning: {message}");
    }
}

/// For tests and benchmarks: the folder of a shared data set (`mnist`, `cifar10`,
/// `hymenoptera`), under `STEEPEST_DATA_DIR` or else `../shared/data` beside the crate. When it is
/// absent this says so on the terminal (past the test harness's capture, so a skipped test is
/// never a silent `ok`) and returns `None`, unless `STEEPEST_REQUIRE_DATA=1`, where a missing
/// data set is a failure (a panic naming the folder).
pub fn shared_data_dir(name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("STEEPEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("STEEPEST_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("STEEPEST_REQUIRE_DATA=1 but the {name} data set is not at {}", dir.display());
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: the {name} data set is not at {} (set STEEPEST_DATA_DIR to its parent folder)",
        dir.display()
    );
    None
}

/// The shape of one image: channels × height × width. The data layer's own type; models
/// convert it into their `nn::Shape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
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
    /// What the held-out split is called: "test", or "val" for an image folder's validation
    /// images.
    pub held_out: &'static str,
}

impl Dataset {
    /// `--classes a,b,...`: keeps only these classes (names, or indices into the class list),
    /// relabelled 0, 1, ... in the order given, in both splits.
    pub fn select_classes(&mut self, list: &str) -> Result<()> {
        let mut chosen: Vec<usize> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let by_name = self
                .class_names
                .iter()
                .position(|n| n == item)
                .or_else(|| self.class_names.iter().position(|n| n.eq_ignore_ascii_case(item)));
            let index =
                by_name.or_else(|| item.parse::<usize>().ok().filter(|&i| i < self.num_classes));
            let Some(index) = index else {
                return Err(Error::config(
                    "--classes",
                    format!(
                        "{item:?} is not a class of {}; its classes are {} (or 0 to {})",
                        self.name,
                        self.class_names.join(", "),
                        self.num_classes.saturating_sub(1)
                    ),
                ));
            };
            if chosen.contains(&index) {
                return Err(Error::config(
                    "--classes",
                    format!("{item:?} ({}) is listed twice", self.class_names[index]),
                ));
            }
            chosen.push(index);
        }
        if chosen.len() < 2 {
            return Err(Error::config(
                "--classes",
                format!("{list:?} names {} class(es); a classifier needs at least 2", chosen.len()),
            ));
        }
        let relabel = |l: u8| chosen.iter().position(|&c| c == l as usize).map(|p| p as u8);
        let size = self.sample_size();
        self.train = self.train.select(size, relabel);
        self.test = self.test.select(size, relabel);
        self.class_names = chosen.iter().map(|&c| self.class_names[c].clone()).collect();
        self.num_classes = chosen.len();
        Ok(())
    }

    /// Bytes (and f32 inputs) per sample.
    pub fn sample_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Per-channel mean and standard deviation of the training pixels (in units of 1/255, as
    /// the model sees them), for `--normalize auto`.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let plane = self.height * self.width;
        // Per-channel (Σx, Σx²) of one sample's pixels.
        type Sums = Vec<(f64, f64)>;
        let sums = |pixels: &[u8]| -> Sums {
            let mut acc = vec![(0f64, 0f64); self.channels];
            for (c, channel) in pixels.chunks_exact(plane.max(1)).enumerate() {
                for &v in channel {
                    let x = v as f64 / 255.0;
                    acc[c % self.channels].0 += x;
                    acc[c % self.channels].1 += x * x;
                }
            }
            acc
        };
        let per_sample: Vec<Sums> = match &self.train.samples {
            Samples::InMemory(images) => {
                images.chunks_exact(self.sample_size().max(1)).map(sums).collect()
            }
            // Streamed data: an estimate from up to 1,000 images spread over the set.
            Samples::Files(files) => files.map_spread(self.train.len, 1000, sums),
        };
        // Added in sample order, so the result does not depend on thread timing.
        let (mut sum, mut sq) = (vec![0f64; self.channels], vec![0f64; self.channels]);
        for acc in &per_sample {
            for (c, &(s, q)) in acc.iter().enumerate() {
                sum[c] += s;
                sq[c] += q;
            }
        }
        let n = (per_sample.len() * plane).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| ((q / n - (s / n).powi(2)).max(1e-12)).sqrt() as f32)
            .collect();
        (mean, std)
    }

    /// One sample's shape (`Model::new` takes it as its input shape).
    pub fn input_shape(&self) -> ImageShape {
        ImageShape { channels: self.channels, height: self.height, width: self.width }
    }
}

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The data sets `--dataset` names.
pub const DATASETS: &str = "synthetic, mnist, fashion-mnist, idx, cifar10, folder";

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The synthetic set is always drawn from this seed, so `--seed` varies the training run
/// (init, shuffle) on the same data, and `eval` sees the same test set as `train`.
pub const SYNTHETIC_SEED: u64 = 0x57EE_9E57;

/// Where and how to find a data set's files.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// `--data-dir`; for downloadable sets it defaults to the cache (`~/.cache/steepest/NAME`).
    pub dir: Option<PathBuf>,
    /// `--download`: fetch missing files (and check the SHA-256 of all of them).
    pub download: bool,
    /// Show a progress bar while downloading.
    pub progress: bool,
    /// Image-folder options (`--image-size`, `--grey`, `--val-split`, ...).
    pub folder: folder::FolderOptions,
}

/// Opens the data set `name` (`--dataset`), reading files from `dir` (`--data-dir`) if it has any.
pub fn open(name: &str, dir: Option<&Path>) -> Result<Dataset> {
    let opts = OpenOptions { dir: dir.map(Path::to_path_buf), ..Default::default() };
    open_with(name, &opts, &mut Vec::new())
}

/// [`open`] with every option; `notes` receives what was chosen on the user's behalf.
pub fn open_with(name: &str, opts: &OpenOptions, notes: &mut Vec<String>) -> Result<Dataset> {
    let downloadable = download::resources(name).is_some();
    if opts.download && !downloadable {
        return Err(Error::config(
            "--download",
            format!(
                "{name} cannot be downloaded; --download knows mnist, fashion-mnist and cifar10"
            ),
        ));
    }
    let mut dir = opts.dir.clone();
    if downloadable && (opts.download || dir.is_none()) {
        let cache = match &dir {
            Some(d) => d.clone(),
            None => download::cache_dir(name)?,
        };
        if opts.download {
            download::ensure(name, &cache, opts.progress)?;
            notes.push(format!("data: {} (downloaded, SHA-256 checked)", cache.display()));
        }
        if opts.download || cache.is_dir() {
            dir = Some(cache);
        }
    }
    let dir = dir.as_deref();
    let need_dir = || {
        dir.ok_or_else(|| {
            Error::config(
                "--data-dir",
                format!(
                    "--dataset {name} reads the four IDX files ({}, {}, {}, {}, each optionally .gz) \
                     from a folder; pass it with --data-dir{}",
                    idx::TRAIN_IMAGES,
                    idx::TRAIN_LABELS,
                    idx::TEST_IMAGES,
                    idx::TEST_LABELS,
                    if downloadable { ", or add --download" } else { "" }
                ),
            )
        })
    };
    match name {
        "synthetic" => Ok(synthetic::generate(
            SYNTHETIC_SEED,
            synthetic::DEFAULT_TRAIN,
            synthetic::DEFAULT_TEST,
        )),
        "mnist" => idx::load_dir(need_dir()?, "mnist", None),
        "fashion-mnist" => idx::load_dir(
            need_dir()?,
            "fashion-mnist",
            Some(FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()),
        ),
        "idx" => idx::load_dir(need_dir()?, "idx", None),
        "cifar10" => cifar::load_dir(dir.ok_or_else(|| {
            Error::config(
                "--data-dir",
                "--dataset cifar10 reads the CIFAR-10 binary batches (data_batch_N.bin, test_batch.bin) \
                 from a folder; pass it with --data-dir, or add --download",
            )
        })?),
        "folder" => folder::load_dir(
            dir.ok_or_else(|| {
                Error::config(
                    "--data-dir",
                    "--dataset folder reads a folder with one subfolder of images per class \
                     (optionally inside train/ and val/); pass it with --data-dir",
                )
            })?,
            &opts.folder,
            notes,
        ),
        _ => Err(Error::config(
            "--dataset",
            format!("unknown data set {name:?}; expected one of {DATASETS}"),
        )),
    }
}

/// Reads a whole data or checkpoint file, refusing what is not a regular file (a FIFO would hang
/// the read, `/dev/zero` would never end) and what would not fit in memory.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::file(path, "is not a regular file (a folder, device or FIFO)"));
    }
    if let Some(why) = crate::device::memory_shortfall(Some(meta.len()), "reading it") {
        return Err(Error::file(path, why));
    }
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

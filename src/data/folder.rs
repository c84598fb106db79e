//! Image folders (`--dataset folder`): one subfolder per class, with `train/` and `val/` (or
//! `test/`) splits when present, else a seeded `--val-split` of one pool.
//!
//! Files are decoded with the `image` crate (PNG, JPEG, GIF, BMP), cropped to the target aspect
//! ratio around the centre and resized, so `predict` can prepare a photo exactly as training did.
//! A file that cannot be read is skipped with a warning naming it and counted, never fatal. When the
//! decoded set would not fit the memory budget, the split keeps only the file list and batches
//! are decoded on a background thread pool ahead of the device (see `loader::Prefetch`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use super::{Dataset, Samples, Split};
use crate::{Error, Result};

/// How to turn a folder into a data set (the CLI's `--image-size`, `--grey`, `--val-split`, ...).
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// (width, height) to resize to; `None` picks the most common size of the training images.
    pub size: Option<(usize, usize)>,
    /// Channels (1 grey, 3 RGB); `None` is 3 when any training image has colour, else 1.
    pub channels: Option<usize>,
    /// Fraction held out for validation when the folder has no `val/` (or `test/`) subfolder.
    pub val_split: f64,
    /// Seeds the validation split.
    pub seed: u64,
    /// Decoded bytes above which batches are decoded on the fly instead of held in memory.
    pub memory_limit: usize,
    /// Leave the training images undecoded (an empty train split), for `eval`, which reads only
    /// the validation images; the training files still name the classes and are checked.
    pub validation_only: bool,
    /// Show progress bars while headers are read and images decoded (on a terminal).
    pub progress: bool,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            size: None,
            channels: None,
            val_split: 0.2,
            seed: 0,
            memory_limit: 2 << 30,
            validation_only: false,
            progress: false,
        }
    }
}

/// The images of one split, kept as paths and decoded when a batch needs them.
#[derive(Debug)]
pub struct ImageFiles {
    paths: Vec<PathBuf>,
    channels: usize,
    height: usize,
    width: usize,
    /// Decodes that failed while streaming, counted (and warned about) each time, so a bad file
    /// counts once per epoch.
    failed: AtomicUsize,
}

impl ImageFiles {
    fn new(paths: Vec<PathBuf>, [channels, height, width]: [usize; 3]) -> ImageFiles {
        ImageFiles { paths, channels, height, width, failed: AtomicUsize::new(0) }
    }

    /// Bytes of one decoded sample.
    pub fn sample_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// How many decodes have failed so far (a bad file counts once per epoch that reads it).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// The files at `keep`, in that order, with no failures counted yet (`--classes`).
    pub fn select(&self, keep: &[usize]) -> ImageFiles {
        let paths = keep.iter().map(|&i| self.paths[i].clone()).collect();
        ImageFiles::new(paths, [self.channels, self.height, self.width])
    }

    /// Decodes sample `i` into `out` (`channels * height * width` bytes, CHW); a failure is
    /// warned about, counted and returned, and the caller leaves the sample out of its batch.
    pub fn decode(&self, i: usize, out: &mut [u8]) -> Result<()> {
        let r = decode_into(&self.paths[i], self.channels, self.height, self.width, out);
        if let Err(e) = &r {
            self.failed.fetch_add(1, Ordering::Relaxed);
            crate::data::warn(format_args!("skipping {e}"));
        }
        r
    }

    /// Decodes the samples `indices` into `out`, one after another, on every core, and says
    /// which decoded (a failure leaves its slot as it was). Once `stop` is set the rest are
    /// skipped, so a dropped batcher does not wait for a whole batch of JPEGs.
    pub fn decode_batch(&self, indices: &[usize], out: &mut [u8], stop: &AtomicBool) -> Vec<bool> {
        par_decode(out, self.sample_size(), indices.len(), |k, slot| {
            !stop.load(Ordering::Relaxed) && self.decode(indices[k], slot).is_ok()
        })
    }

    /// `f` of up to `at_most` samples spread evenly over the first `len`, in sample order;
    /// those that fail to decode are left out. Decoded one per thread at a time, so a
    /// statistic over a streamed set stays within the memory budget.
    pub fn map_spread<T: Send>(
        &self,
        len: usize,
        at_most: usize,
        f: impl Fn(&[u8]) -> T + Sync,
    ) -> Vec<T> {
        let picks: Vec<usize> = (0..len).step_by(len.div_ceil(at_most).max(1)).collect();
        let results: Vec<Mutex<Option<T>>> = picks.iter().map(|_| Mutex::new(None)).collect();
        par_for(picks.len(), |k| {
            let mut pixels = vec![0u8; self.sample_size()];
            if self.decode(picks[k], &mut pixels).is_ok() {
                *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(f(&pixels));
            }
        });
        results
            .into_iter()
            .filter_map(|r| r.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }
}

/// Decodes one image file and prepares it as training does: crop the centre to the target aspect
/// ratio, resize to `width`×`height` (bilinear with antialiasing), convert to `channels` (1 or 3),
/// and write it channel-major into `out`.
pub fn decode_into(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
    out: &mut [u8],
) -> Result<()> {
    let img = open(path)?;
    let img = fit(img, width as u32, height as u32);
    let plane = width * height;
    match channels {
        1 => out[..plane].copy_from_slice(img.to_luma8().as_raw()),
        3 => {
            let rgb = img.to_rgb8();
            for (p, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                out[p] = px[0];
                out[plane + p] = px[1];
                out[2 * plane + p] = px[2];
            }
        }
        _ => {
            return Err(Error::file(
                path,
                format!("cannot make {channels} channels; expected 1 or 3"),
            ))
        }
    }
    Ok(())
}

/// [`decode_into`] into a new buffer.
pub fn decode(path: &Path, channels: usize, height: usize, width: usize) -> Result<Vec<u8>> {
    let mut out = vec![0; channels * height * width];
    decode_into(path, channels, height, width, &mut out)?;
    Ok(out)
}

fn open(path: &Path) -> Result<DynamicImage> {
    let bytes = crate::data::read_file(path)?;
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    // The JPEG decoder fills a cut-off file with grey instead of failing; such a file must be
    // skipped like any other unreadable one, not trained on.
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        return Err(Error::file(
            path,
            "truncated JPEG: the data stops before its end-of-image marker",
        ));
    }
    reader.decode().map_err(|e| Error::file(path, format!("not a readable image: {e}")))
}

/// Whether an end-of-image marker (FF D9) follows the main image's first start-of-scan (FF DA).
/// The marker segments before it are walked by their lengths, so an EXIF thumbnail (a whole JPEG
/// inside APP1, with its own scan and end) is stepped over. Inside scan data every FF byte is
/// followed by 00 or a restart marker, so FF D9 there is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut at = 2; // after SOI
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else { return false };
        match marker {
            0xDA => return bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
            // Markers without a length.
            0x01 | 0xD0..=0xD8 => at += 2,
            _ => {
                let Some(len) = bytes.get(at + 2..at + 4) else { return false };
                at += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
            }
        }
    }
}

/// Centre crop to the aspect ratio of `w`×`h`, then resize to exactly that.
fn fit(img: DynamicImage, w: u32, h: u32) -> DynamicImage {
    let (iw, ih) = (img.width(), img.height());
    if (iw, ih) == (w, h) {
        return img;
    }
    // Compare iw/ih with w/h without rounding: iw*h vs w*ih.
    let (cw, ch) = if iw as u64 * h as u64 > w as u64 * ih as u64 {
        (((ih as u64 * w as u64 + h as u64 / 2) / h as u64).max(1) as u32, ih)
    } else {
        (iw, ((iw as u64 * h as u64 + w as u64 / 2) / w as u64).max(1) as u32)
    };
    let cropped = img.crop_imm((iw - cw) / 2, (ih - ch) / 2, cw, ch);
    cropped.resize_exact(w, h, FilterType::Triangle)
}

/// What a header says: size and whether the image has colour.
struct Probe {
    width: u32,
    height: u32,
    colour: bool,
}

fn probe(path: &Path) -> Result<Probe> {
    use image::ImageDecoder;
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let decoder = reader
        .into_decoder()
        .map_err(|e| Error::file(path, format!("not a readable image: {e}")))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(Error::file(path, "the image is empty (0 pixels)"));
    }
    Ok(Probe { width, height, colour: decoder.color_type().has_color() })
}

/// `decode(k, slot)` for each of the first `n` slots of `sample` bytes in `out`, spread over the
/// threads; which of them succeeded.
fn par_decode(
    out: &mut [u8],
    sample: usize,
    n: usize,
    decode: impl Fn(usize, &mut [u8]) -> bool + Sync,
) -> Vec<bool> {
    let ok: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    let slots: Vec<Mutex<&mut [u8]>> = out.chunks_mut(sample.max(1)).map(Mutex::new).collect();
    par_for(n, |k| {
        // One slot per sample; each index locks only its own (never contended).
        let mut slot = slots[k].lock().unwrap_or_else(|p| p.into_inner());
        if decode(k, &mut slot) {
            ok[k].store(true, Ordering::Relaxed);
        }
    });
    ok.into_iter().map(AtomicBool::into_inner).collect()
}

/// Runs `f(i)` for `i in 0..n` on every core, handing out indices one at a time (image files
/// differ wildly in decode cost, so fixed chunks would leave cores idle).
pub(crate) fn par_for<F: Fn(usize) + Sync>(n: usize, f: F) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

/// Class subfolders of `dir`, sorted by name (as torchvision's ImageFolder does), each with its
/// files sorted. Hidden entries (`.DS_Store`, `.git`) are ignored.
fn scan(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let read = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|e| Error::file(d, format!("cannot list the folder: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut classes = Vec::new();
    for sub in read(dir)?.into_iter().filter(|p| p.is_dir()) {
        // Class names go into checkpoints as UTF-8: a name that is not would be stored lossily,
        // and two such names could become one class.
        let Some(name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(Error::file(
                &sub,
                "class folder name is not valid UTF-8; rename it (class names are stored in \
                 checkpoints as text)",
            ));
        };
        let files = read(&sub)?.into_iter().filter(|p| p.is_file()).collect();
        classes.push((name, files));
    }
    Ok(classes)
}

/// One split's readable files and labels, after probing.
struct Listing {
    files: Vec<PathBuf>,
    labels: Vec<u8>,
    probes: Vec<Probe>,
}

/// Probes every file in parallel; unreadable ones are warned about, counted and dropped.
fn probe_all(files: Vec<(PathBuf, u8)>, skipped: &AtomicUsize, progress: bool) -> Listing {
    let bar = bar(progress, files.len(), "reading headers");
    let results: Vec<std::sync::Mutex<Option<Result<Probe>>>> =
        files.iter().map(|_| std::sync::Mutex::new(None)).collect();
    par_for(files.len(), |i| {
        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(probe(&files[i].0));
        bar.inc(1);
    });
    bar.finish_and_clear();
    let mut out = Listing { files: Vec::new(), labels: Vec::new(), probes: Vec::new() };
    for ((path, label), r) in files.into_iter().zip(results) {
        match r.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(p)) => {
                out.files.push(path);
                out.labels.push(label);
                out.probes.push(p);
            }
            Some(Err(e)) => {
                skipped.fetch_add(1, Ordering::Relaxed);
                crate::data::warn(format_args!("skipping {e}"));
            }
            None => unreachable!("par_for visits every index"),
        }
    }
    out
}

/// Loads an image folder. `notes` receives what was chosen for the user (size, channels,
/// streaming, skipped files).
pub fn load_dir(dir: &Path, opts: &FolderOptions, notes: &mut Vec<String>) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "--dataset folder: not a folder"));
    }
    if let Some(c) = opts.channels.filter(|&c| c != 1 && c != 3) {
        return Err(Error::config(
            "--color",
            format!("images are read as 1 (grey) or 3 (RGB) channels, not {c}"),
        ));
    }
    let classes = scan_classes(dir)?;
    let (train_files, val_files) = split_files(&classes, opts, notes)?;
    let class_names = &classes.names;
    let skipped = AtomicUsize::new(0);
    let train = probe_all(train_files, &skipped, opts.progress);
    let val = probe_all(val_files, &skipped, opts.progress);
    for (i, name) in class_names.iter().enumerate() {
        if !train.labels.contains(&(i as u8)) {
            return Err(Error::file(
                classes.train_dir.join(name),
                "class folder has no readable images",
            ));
        }
    }
    let (width, height) = image_size(opts, &train, notes)?;
    let channels =
        opts.channels.unwrap_or_else(|| if train.probes.iter().any(|p| p.colour) { 3 } else { 1 });
    let mut train = train;
    if opts.validation_only {
        train = Listing { files: Vec::new(), labels: Vec::new(), probes: Vec::new() };
    }
    let (train, test) = materialise(train, val, [channels, height, width], opts, &skipped, notes);
    let class_names = class_names.clone();
    Ok(Dataset {
        held_out: "val",
        name: "folder".into(),
        channels,
        height,
        width,
        num_classes: class_names.len(),
        class_names,
        train,
        test,
    })
}

/// A folder's classes: the training split's `(class, files)` (sorted), the validation
/// split's when the folder has `train/` and `val/`, where each lives, and the class names.
struct Classes {
    names: Vec<String>,
    train: Vec<(String, Vec<PathBuf>)>,
    val: Option<Vec<(String, Vec<PathBuf>)>>,
    train_dir: PathBuf,
    val_dir: PathBuf,
}

/// Step 1, scan: the class folders, directly or inside `train/` and `val/`; at least two
/// classes (at most 256), each with files.
fn scan_classes(dir: &Path) -> Result<Classes> {
    let split_dir = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_dir());
    let (train, val, val_dir) = match split_dir(&["train"]) {
        Some(train) => {
            let val_dir = split_dir(&["val", "valid", "validation", "test"]).ok_or_else(|| {
                Error::file(dir, "has a train/ subfolder but no val/ (or test/) beside it")
            })?;
            (scan(&train)?, Some(scan(&val_dir)?), val_dir)
        }
        None => (scan(dir)?, None, dir.to_path_buf()),
    };
    let names: Vec<String> = train.iter().map(|(n, _)| n.clone()).collect();
    let train_dir = if val.is_some() { dir.join("train") } else { dir.to_path_buf() };
    if names.len() < 2 {
        return Err(Error::file(
            &train_dir,
            format!(
                "found {} class folder{} ({}); a classifier needs one subfolder per class, at least two",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ),
        ));
    }
    if names.len() > 256 {
        return Err(Error::file(
            &train_dir,
            format!("{} class folders; at most 256 are supported", names.len()),
        ));
    }
    for (name, files) in &train {
        if files.is_empty() {
            return Err(Error::file(
                train_dir.join(name),
                "class folder has no files; every class needs images",
            ));
        }
    }
    Ok(Classes { names, train, val, train_dir, val_dir })
}

/// Files with their class labels.
type Labelled = Vec<(PathBuf, u8)>;

/// Step 2, split: every file with its label, for training and validation: the `val/` folder,
/// or a seeded `--val-split` of every class; then a seeded order that mixes the classes, so
/// `--limit-train N` keeps a sample of every class.
fn split_files(
    classes: &Classes,
    opts: &FolderOptions,
    notes: &mut Vec<String>,
) -> Result<(Labelled, Labelled)> {
    let label_of: HashMap<&str, u8> =
        classes.names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u8)).collect();
    let flatten = |list: &[(String, Vec<PathBuf>)]| -> Result<Labelled> {
        let mut v = Vec::new();
        for (name, files) in list {
            let label = *label_of.get(name.as_str()).ok_or_else(|| {
                Error::file(
                    classes.val_dir.join(name),
                    format!(
                        "class {name:?} is not among the training classes ({})",
                        classes.names.join(", ")
                    ),
                )
            })?;
            v.extend(files.iter().map(|f| (f.clone(), label)));
        }
        Ok(v)
    };
    let (mut train_files, mut val_files) = match &classes.val {
        Some(val) => (flatten(&classes.train)?, flatten(val)?),
        None => {
            if !(0.0..1.0).contains(&opts.val_split) {
                return Err(Error::config(
                    "--val-split",
                    format!("{} is not a fraction in [0, 1)", opts.val_split),
                ));
            }
            // Seeded shuffle, then hold out the fraction of every class (stratified), so small
            // classes are not left out of validation by chance.
            let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x5917_7A11);
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (name, files) in &classes.train {
                let mut files = files.clone();
                rng.shuffle(&mut files);
                // Never the whole class: training needs at least one image of it.
                let hold = ((files.len() as f64 * opts.val_split).round() as usize)
                    .min(files.len().saturating_sub(1));
                let label = label_of[name.as_str()];
                val.extend(files[..hold].iter().map(|f| (f.clone(), label)));
                train.extend(files[hold..].iter().map(|f| (f.clone(), label)));
            }
            notes.push(format!(
                "no val/ folder: holding out {:.0}% of each class for validation (--val-split)",
                opts.val_split * 100.0
            ));
            (train, val)
        }
    };
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x0F01_DE25);
    rng.shuffle(&mut train_files);
    rng.shuffle(&mut val_files);
    Ok((train_files, val_files))
}

/// Step 4, size: `--image-size`, else the most common size among the training images (ties
/// to the smaller area, then the narrower), at most 4096 a side.
fn image_size(
    opts: &FolderOptions,
    train: &Listing,
    notes: &mut Vec<String>,
) -> Result<(usize, usize)> {
    if let Some(s) = opts.size {
        return Ok(s);
    }
    let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
    for p in &train.probes {
        *counts.entry((p.width as usize, p.height as usize)).or_default() += 1;
    }
    // Most common; ties go to the smaller area, then the narrower size, so the choice never
    // depends on the map's order.
    let (&size, &n) = counts
        .iter()
        .max_by_key(|(&(w, h), &n)| (n, std::cmp::Reverse((w * h, w, h))))
        .expect("at least two readable training images");
    // The same bound as --image-size: a folder of huge scans (or a forged header) must not
    // pick a size that needs terabytes.
    if size.0 > 4096 || size.1 > 4096 {
        return Err(Error::config(
            "--image-size",
            format!(
                "the most common training image size is {}x{}, larger than 4096 a side; \
                 choose a size with --image-size (e.g. 224)",
                size.0, size.1
            ),
        ));
    }
    notes.push(format!(
        "image size: {}x{} (the most common size, {n} of {} training images; set it with --image-size)",
        size.0,
        size.1,
        train.probes.len()
    ));
    Ok(size)
}

/// Step 5, materialise: decode both splits into memory, or, past `--memory-limit`, keep their
/// file lists for decoding batch by batch as training reads them.
fn materialise(
    train: Listing,
    val: Listing,
    [channels, height, width]: [usize; 3],
    opts: &FolderOptions,
    skipped: &AtomicUsize,
    notes: &mut Vec<String>,
) -> (Split, Split) {
    let sample = channels * height * width;
    let total = (train.files.len() + val.files.len()) * sample;
    let stream = total > opts.memory_limit;
    let make = |l: Listing| -> Split {
        if stream {
            let files = ImageFiles::new(l.files, [channels, height, width]);
            return Split {
                len: l.labels.len(),
                labels: l.labels,
                samples: Samples::Files(Arc::new(files)),
            };
        }
        decode_all(l, channels, height, width, skipped, opts.progress)
    };
    if stream {
        notes.push(format!(
            "decoded images would take {} MiB, over the {} MiB memory budget: decoding batches on the fly",
            total >> 20,
            opts.memory_limit >> 20
        ));
    }
    let train = make(train);
    let test = make(val);
    let skipped = skipped.load(Ordering::Relaxed);
    if skipped > 0 {
        notes.push(format!(
            "skipped {skipped} unreadable file{}",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    (train, test)
}

/// Decodes a whole split into memory on every core; failures are warned about and left out.
fn decode_all(
    l: Listing,
    channels: usize,
    height: usize,
    width: usize,
    skipped: &AtomicUsize,
    progress: bool,
) -> Split {
    let sample = channels * height * width;
    let n = l.files.len();
    let bar = bar(progress, n, "decoding images");
    let mut images = vec![0u8; n * sample];
    let ok = par_decode(&mut images, sample, n, |i, slot| {
        let decoded = decode_into(&l.files[i], channels, height, width, slot);
        if let Err(e) = &decoded {
            skipped.fetch_add(1, Ordering::Relaxed);
            bar.suspend(|| crate::data::warn(format_args!("skipping {e}")));
        }
        bar.inc(1);
        decoded.is_ok()
    });
    bar.finish_and_clear();
    // Compact: keep the samples that decoded, in order.
    let mut labels = Vec::with_capacity(n);
    let mut kept = 0;
    for (i, &decoded) in ok.iter().enumerate() {
        if decoded {
            if kept != i {
                images.copy_within(i * sample..(i + 1) * sample, kept * sample);
            }
            labels.push(l.labels[i]);
            kept += 1;
        }
    }
    images.truncate(kept * sample);
    Split::in_memory(images, labels)
}

/// A progress bar over `len` files on stderr, or a hidden one.
fn bar(show: bool, len: usize, what: &str) -> indicatif::ProgressBar {
    if !show || len < 100 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP1 segment holding `app1`, then SOS with its scan, then `tail`.
    fn jpeg(app1: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1];
        v.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(app1);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02, 0x11, 0xFF, 0x00, 0x22]);
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn a_jpeg_is_complete_only_with_an_end_after_the_main_scan() {
        // An EXIF thumbnail is a whole JPEG, scan and end marker included, inside APP1.
        let thumbnail = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x33, 0xFF, 0xD9];
        assert!(!jpeg_is_complete(&jpeg(&thumbnail, &[0x44])), "cut off after the thumbnail's end");
        assert!(jpeg_is_complete(&jpeg(&thumbnail, &[0x44, 0xFF, 0xD9])));
        assert!(jpeg_is_complete(&jpeg(&[], &[0xFF, 0xD0, 0x55, 0xFF, 0xD9])), "restart markers");
        assert!(!jpeg_is_complete(&[0xFF, 0xD8, 0xFF, 0xE1, 0x40]), "cut inside a header");
        assert!(!jpeg_is_complete(&[0xFF, 0xD8]));
    }
}

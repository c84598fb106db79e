//! Reader for the CIFAR-10 binary format (`cifar-10-batches-bin`): headerless files of 3073-byte
//! records, each one label byte (0..=9) followed by 3072 pixel bytes: the 32x32 red plane, then
//! green, then blue, each row-major. That is already NCHW, so the pixels are copied as they are.

use std::path::{Path, PathBuf};

use super::{Dataset, Split};
use crate::error::{Error, Result};

/// Bytes per record: 1 label byte + 3072 pixel bytes.
pub const RECORD: usize = 3073;

/// CIFAR-10's class names, in label order (as in `batches.meta.txt`).
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

const CHANNELS: usize = 3;
const SIDE: usize = 32;
/// Pixel bytes per record (3 planes of 32x32).
const PIXELS: usize = CHANNELS * SIDE * SIDE;
const NUM_CLASSES: usize = 10;
/// Optional file of class names, one per line, next to the batches.
const META_FILE: &str = "batches.meta.txt";
const TRAIN_PREFIX: &str = "data_batch_";
const TEST_PREFIX: &str = "test_batch";
const TEST_FILE: &str = "test_batch.bin";
const SUFFIX: &str = ".bin";
/// The flag that chooses the data folder, named in "file not found" errors.
const DATA_DIR_FLAG: &str = "--data-dir";

/// Reads every training batch (`data_batch_*.bin`, sorted by their number) and the test batch
/// files (`test_batch*.bin`, e.g. `test_batch.bin` or `test_batch_first1000.bin`) found in `dir`.
///
/// Any non-empty subset of the training batches may be present. When `test_batch.bin` exists it
/// is the test split; otherwise every `test_batch*.bin` is read, in name order. Class names come
/// from `batches.meta.txt` when the folder has one, else [`CLASS_NAMES`].
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let (train_paths, test_paths) = find_batches(dir)?;
    let meta = dir.join(META_FILE);
    let class_names = if meta.exists() {
        read_class_names(&meta)?
    } else {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    };
    let train = read_split(&train_paths)?;
    let test = read_split(&test_paths)?;
    Ok(Dataset {
        held_out: "test",
        name: "cifar10".to_string(),
        channels: CHANNELS,
        height: SIDE,
        width: SIDE,
        num_classes: NUM_CLASSES,
        class_names,
        train,
        test,
    })
}

/// Reads one batch file: returns (images, labels), images `labels.len() * 3072` bytes in NCHW.
pub fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = crate::data::read_file(path)?;
    if bytes.is_empty() {
        return Err(Error::file(
            path,
            format!("the file is empty (0 bytes); a CIFAR-10 batch holds {RECORD}-byte records"),
        ));
    }
    let leftover = bytes.len() % RECORD;
    if leftover != 0 {
        return Err(Error::file(
            path,
            format!(
                "file is {} bytes, not a multiple of the {RECORD}-byte CIFAR-10 record \
                 (1 label byte + {PIXELS} pixel bytes): that is {} whole records plus {leftover} \
                 leftover bytes; the file is truncated or not a CIFAR-10 batch",
                bytes.len(),
                bytes.len() / RECORD
            ),
        ));
    }
    let count = bytes.len() / RECORD;
    let mut images = Vec::with_capacity(count * PIXELS);
    let mut labels = Vec::with_capacity(count);
    for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
        let (label, pixels) = record.split_at(1);
        let label = label[0];
        if usize::from(label) >= NUM_CLASSES {
            return Err(Error::file(
                path,
                format!(
                    "record {index} (0-based, at byte offset {}) has label {label}; CIFAR-10 \
                     labels are 0..={}",
                    index * RECORD,
                    NUM_CLASSES - 1
                ),
            ));
        }
        labels.push(label);
        images.extend_from_slice(pixels);
    }
    Ok((images, labels))
}

/// The training batch paths (by batch number) and test batch paths to read from `dir`.
fn find_batches(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::file(
            dir,
            format!(
                "cannot list the CIFAR-10 data folder ({e}); set the folder holding \
                 data_batch_N.bin and test_batch.bin with {DATA_DIR_FLAG}"
            ),
        )
    })?;
    let mut train: Vec<(u64, String)> = Vec::new();
    let mut test: Vec<String> = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::file(dir, format!("cannot list the data folder: {e}")))?;
        // Names that are not UTF-8 cannot match the patterns below.
        let Ok(name) = entry.file_name().into_string() else { continue };
        if let Some(number) = train_batch_number(&name) {
            train.push((number, name));
        } else if name.starts_with(TEST_PREFIX) && name.ends_with(SUFFIX) {
            test.push(name);
        }
    }
    if train.is_empty() {
        return Err(Error::file(
            dir,
            format!(
                "no CIFAR-10 training batch found; expected one or more of data_batch_1.bin .. \
                 data_batch_5.bin ({TRAIN_PREFIX}N{SUFFIX}); set the folder holding them with \
                 {DATA_DIR_FLAG}"
            ),
        ));
    }
    if test.is_empty() {
        return Err(Error::file(
            dir,
            format!(
                "no CIFAR-10 test batch found; expected {TEST_FILE} (or another \
                 {TEST_PREFIX}*{SUFFIX} file) next to the training batches; set the folder \
                 holding them with {DATA_DIR_FLAG}"
            ),
        ));
    }
    // Numeric order (1, 2, ..., 10). Two names for one number (`data_batch_01.bin` and
    // `data_batch_1.bin`) would read that batch twice: a copy, not more data.
    train.sort();
    if let Some(w) = train.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::file(
            dir.join(&w[1].1),
            format!(
                "is training batch {} again (so is {}); keep one file per batch number",
                w[1].0, w[0].1
            ),
        ));
    }
    test.sort();
    if test.iter().any(|name| name == TEST_FILE) {
        test.retain(|name| name == TEST_FILE);
    }
    Ok((
        train.into_iter().map(|(_, name)| dir.join(name)).collect(),
        test.into_iter().map(|name| dir.join(name)).collect(),
    ))
}

/// `Some(N)` for `data_batch_N.bin` where N is all ASCII digits.
fn train_batch_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(TRAIN_PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than fit in a u64 still sort after every smaller number.
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// Reads the batches in order and concatenates them into one split.
fn read_split(paths: &[PathBuf]) -> Result<Split> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let (batch_images, batch_labels) = read_batch(path)?;
        if labels.is_empty() {
            images = batch_images;
            labels = batch_labels;
        } else {
            images.extend_from_slice(&batch_images);
            labels.extend_from_slice(&batch_labels);
        }
    }
    Ok(Split::in_memory(images, labels))
}

/// One class name per line, blank lines ignored; there must be exactly 10.
fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read the class names: {e}")))?;
    let names: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if names.len() != NUM_CLASSES {
        return Err(Error::file(
            path,
            format!(
                "holds {} class names; CIFAR-10 needs exactly {NUM_CLASSES}, one per line \
                 (blank lines are ignored)",
                names.len()
            ),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_dir::TempDir;

    /// Distinct pixel bytes for sample `seed`.
    fn pixels(seed: usize) -> Vec<u8> {
        (0..PIXELS).map(|i| ((seed * 131 + i * 7) % 256) as u8).collect()
    }

    /// A batch file of one record per (label, seed).
    fn batch(records: &[(u8, usize)]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|&(label, seed)| std::iter::once(label).chain(pixels(seed)))
            .collect()
    }

    fn images_of(records: &[(u8, usize)]) -> Vec<u8> {
        records.iter().flat_map(|&(_, seed)| pixels(seed)).collect()
    }

    fn labels_of(records: &[(u8, usize)]) -> Vec<u8> {
        records.iter().map(|&(label, _)| label).collect()
    }

    /// Asserts an error whose message names `file` and contains every one of `facts`.
    fn assert_err<T: std::fmt::Debug>(result: Result<T>, file: &str, facts: &[&str]) {
        let msg = result.expect_err("expected an error").to_string();
        assert!(msg.contains(file), "message should name {file}: {msg}");
        for fact in facts {
            assert!(msg.contains(fact), "message should contain {fact:?}: {msg}");
        }
    }

    #[test]
    fn loads_two_training_batches_and_a_test_batch() {
        let dir = TempDir::new("two");
        let b1 = [(3, 0), (0, 1), (9, 2)];
        let b2 = [(5, 3), (1, 4)];
        let t = [(7, 5), (2, 6), (4, 7), (8, 8)];
        dir.write("data_batch_2.bin", &batch(&b2));
        dir.write("data_batch_1.bin", &batch(&b1));
        dir.write("test_batch.bin", &batch(&t));
        // Files that match neither pattern are ignored.
        dir.write("data_batch_.bin", b"junk");
        dir.write("data_batch_1.bin.bak", b"junk");
        dir.write("data_batch_x.bin", b"junk");
        dir.write("readme.html", b"junk");

        let ds = load_dir(dir.path()).expect("load");
        assert_eq!(ds.name, "cifar10");
        assert_eq!((ds.channels, ds.height, ds.width, ds.num_classes), (3, 32, 32, 10));
        assert_eq!(ds.sample_size(), PIXELS);
        assert_eq!(ds.class_names, CLASS_NAMES.to_vec());

        let train: Vec<_> = b1.iter().chain(&b2).copied().collect();
        assert_eq!(ds.train.len, 5);
        assert_eq!(ds.train.labels, labels_of(&train));
        assert_eq!(ds.train.images().unwrap(), images_of(&train));
        assert_eq!(ds.test.len, 4);
        assert_eq!(ds.test.labels, labels_of(&t));
        assert_eq!(ds.test.images().unwrap(), images_of(&t));
    }

    #[test]
    fn training_batches_go_in_numeric_order() {
        let dir = TempDir::new("numeric");
        // Label = batch number mod 10, so the order shows in the labels.
        for n in [10usize, 2, 9, 1, 11] {
            dir.write(&format!("data_batch_{n}.bin"), &batch(&[((n % 10) as u8, n)]));
        }
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        let ds = load_dir(dir.path()).expect("load");
        assert_eq!(ds.train.labels, vec![1, 2, 9, 0, 1]);
        assert_eq!(
            ds.train.images().unwrap(),
            images_of(&[(1, 1), (2, 2), (9, 9), (0, 10), (1, 11)])
        );
    }

    #[test]
    fn prefers_test_batch_bin_over_other_test_files() {
        let dir = TempDir::new("prefer");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch.bin", &batch(&[(6, 1)]));
        dir.write("test_batch_first1000.bin", &batch(&[(7, 2), (8, 3)]));
        let ds = load_dir(dir.path()).expect("load");
        assert_eq!(ds.test.len, 1);
        assert_eq!(ds.test.labels, vec![6]);
        assert_eq!(ds.test.images().unwrap(), pixels(1));
    }

    #[test]
    fn takes_every_other_test_file_in_name_order() {
        let dir = TempDir::new("tests");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch_b.bin", &batch(&[(8, 3)]));
        dir.write("test_batch_a.bin", &batch(&[(6, 1), (7, 2)]));
        let ds = load_dir(dir.path()).expect("load");
        assert_eq!(ds.test.len, 3);
        assert_eq!(ds.test.labels, vec![6, 7, 8]);
        assert_eq!(ds.test.images().unwrap(), images_of(&[(6, 1), (7, 2), (8, 3)]));
    }

    #[test]
    fn class_names_come_from_batches_meta_txt() {
        let dir = TempDir::new("meta");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j j"];
        dir.write(META_FILE, format!("\n{}\r\n\n", names.join("\r\n")).as_bytes());
        let ds = load_dir(dir.path()).expect("load");
        assert_eq!(ds.class_names, names.to_vec());
    }

    #[test]
    fn batches_meta_txt_needs_ten_names() {
        let dir = TempDir::new("meta9");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        dir.write(META_FILE, CLASS_NAMES[..9].join("\n\n").as_bytes());
        assert_err(load_dir(dir.path()), META_FILE, &["holds 9 class names", "exactly 10"]);
    }

    #[test]
    fn size_not_a_multiple_of_the_record() {
        let dir = TempDir::new("size");
        let mut bytes = batch(&[(1, 0), (2, 1)]);
        bytes.extend_from_slice(&[0; 5]);
        let path = dir.write("data_batch_1.bin", &bytes);
        assert_err(
            read_batch(&path),
            "data_batch_1.bin",
            &["6151 bytes", "3073", "2 whole records", "5 leftover bytes"],
        );
        // The same error comes through load_dir.
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        assert_err(load_dir(dir.path()), "data_batch_1.bin", &["6151 bytes"]);
    }

    #[test]
    fn empty_file() {
        let dir = TempDir::new("empty");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch.bin", &[]);
        assert_err(load_dir(dir.path()), "test_batch.bin", &["empty", "0 bytes"]);
    }

    #[test]
    fn label_above_nine() {
        let dir = TempDir::new("label");
        let path = dir.write("data_batch_3.bin", &batch(&[(9, 0), (0, 1), (12, 2), (200, 3)]));
        assert_err(read_batch(&path), "data_batch_3.bin", &["record 2", "label 12", "0..=9"]);
    }

    #[test]
    fn unreadable_file() {
        let dir = TempDir::new("unreadable");
        let missing = dir.path().join("data_batch_7.bin");
        assert_err(read_batch(&missing), "data_batch_7.bin", &["cannot read"]);
        // A folder with a batch's name cannot be read either (permissions would not stop root).
        std::fs::create_dir(dir.path().join("data_batch_1.bin")).expect("mkdir");
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        assert_err(load_dir(dir.path()), "data_batch_1.bin", &["not a regular file"]);
    }

    /// A FIFO named like a batch used to hang the reader forever (the IDX reader skipped it).
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_not_waited_on() {
        let dir = TempDir::new("fifo");
        let fifo = dir.path().join("data_batch_1.bin");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        assert_err(load_dir(dir.path()), "data_batch_1.bin", &["not a regular file"]);
    }

    #[test]
    fn no_training_batch() {
        let dir = TempDir::new("notrain");
        dir.write("test_batch.bin", &batch(&[(0, 0)]));
        dir.write("data_batch.bin", &batch(&[(0, 0)]));
        let folder = dir.path().display().to_string();
        assert_err(
            load_dir(dir.path()),
            &folder,
            &["no CIFAR-10 training batch", "data_batch_1.bin", "--data-dir"],
        );
    }

    #[test]
    fn no_test_batch() {
        let dir = TempDir::new("notest");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("test_batch.txt", b"junk");
        let folder = dir.path().display().to_string();
        assert_err(
            load_dir(dir.path()),
            &folder,
            &["no CIFAR-10 test batch", "test_batch.bin", "test_batch*.bin", "--data-dir"],
        );
    }

    #[test]
    fn missing_folder() {
        let dir = TempDir::new("nofolder");
        let gone = dir.path().join("nowhere");
        assert_err(load_dir(&gone), "nowhere", &["cannot list", "--data-dir"]);
    }

    /// The real files under `shared/data/cifar10` (batches 1..3 and the first 1000 test images).
    #[test]
    fn shared_cifar10_when_present() {
        let Some(dir) = crate::data::shared_data_dir("cifar10") else { return };
        let ds = load_dir(&dir).expect("load shared CIFAR-10");
        assert_eq!((ds.channels, ds.height, ds.width, ds.num_classes), (3, 32, 32, 10));
        assert_eq!(ds.train.len, 30000);
        assert_eq!(ds.test.len, 1000);
        for split in [&ds.train, &ds.test] {
            assert_eq!(split.labels.len(), split.len);
            assert_eq!(split.images().unwrap().len(), split.len * 3 * 32 * 32);
            assert!(split.labels.iter().all(|&l| l < 10));
            let mut counts = [0usize; 10];
            split.labels.iter().for_each(|&l| counts[l as usize] += 1);
            assert!(counts.iter().all(|&c| c > 0), "every class present: {counts:?}");
        }
        let meta = std::fs::read_to_string(dir.join(META_FILE)).expect("read meta");
        let names: Vec<&str> = meta.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(ds.class_names, names);
        assert_eq!(ds.class_names, CLASS_NAMES.to_vec());
        // First labels and data_batch_1's label counts, as documented in SOURCES.md.
        assert_eq!(ds.train.labels[..10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
        assert_eq!(ds.test.labels[..10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
        let mut counts = [0usize; 10];
        ds.train.labels[..10000].iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]);
    }

    #[test]
    fn two_files_for_one_batch_number_are_an_error() {
        let dir = TempDir::new("dup-batch");
        dir.write("data_batch_1.bin", &batch(&[(0, 0)]));
        dir.write("data_batch_01.bin", &batch(&[(1, 1)]));
        dir.write("test_batch.bin", &batch(&[(0, 2)]));
        assert_err(
            load_dir(dir.path()),
            "data_batch_1.bin",
            &["training batch 1 again", "data_batch_01.bin"],
        );
    }
}

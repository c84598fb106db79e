//! Reader for IDX files (the MNIST format, also used by Fashion-MNIST and others): a big-endian
//! u32 magic, one big-endian u32 per dimension, then the u8 data. Files may be gzipped; gzip is
//! detected by its magic bytes, not by the file name, since renamed files are common.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{Dataset, Split};
use crate::error::{Error, Result};

/// The four files of an IDX data set, each looked up as NAME or NAME.gz inside the data folder.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// u8 data with 3 dimensions (count, rows, cols).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// u8 data with 1 dimension (count).
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The flag that chooses the data folder, named in "file not found" errors.
const DATA_DIR_FLAG: &str = "--data-dir";
/// Upper bound for the capacity guessed from a gzip trailer, so a corrupt trailer cannot make us
/// reserve absurd amounts of memory before decoding fails.
const MAX_CAPACITY_HINT: usize = 1 << 30;

/// Loads train and test splits from the four IDX files in `dir` (each raw or gzipped).
///
/// `name` becomes `Dataset::name`; `class_names` defaults to the label numbers.
pub fn load_dir(dir: &Path, name: &str, class_names: Option<Vec<String>>) -> Result<Dataset> {
    let train_images_path = find_file(dir, TRAIN_IMAGES)?;
    let train_labels_path = find_file(dir, TRAIN_LABELS)?;
    let test_images_path = find_file(dir, TEST_IMAGES)?;
    let test_labels_path = find_file(dir, TEST_LABELS)?;

    let train = load_split(&train_images_path, &train_labels_path)?;
    let test = load_split(&test_images_path, &test_labels_path)?;
    if train.shape != test.shape {
        return Err(Error::file(
            &test_images_path,
            format!(
                "test images are {}x{} but the train images in {} are {}x{}; both splits must \
                 have the same image size",
                test.shape.0,
                test.shape.1,
                train_images_path.display(),
                train.shape.0,
                train.shape.1
            ),
        ));
    }

    // MNIST has digits 0-9: a larger label is a damaged file, not an 11th class.
    if name == "mnist" {
        for (labels, path) in
            [(&train.split.labels, &train_labels_path), (&test.split.labels, &test_labels_path)]
        {
            if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= 10) {
                return Err(Error::file(
                    path,
                    format!("label {l} at index {i}; MNIST's labels are the digits 0 to 9"),
                ));
            }
        }
    }
    let max_label = train.split.labels.iter().chain(&test.split.labels).copied().max();
    let num_classes = num_classes_for(max_label);
    // A class seen only in the test split is never trained: say so rather than report its
    // test accuracy as the model's.
    let mut in_train = [false; 256];
    for &l in &train.split.labels {
        in_train[l as usize] = true;
    }
    let mut test_only: Vec<u8> =
        test.split.labels.iter().copied().filter(|&l| !in_train[l as usize]).collect();
    test_only.sort_unstable();
    test_only.dedup();
    if !test_only.is_empty() {
        crate::data::warn(format_args!(
            "{}: label(s) {test_only:?} appear only in the test split, never in {}; the model \
             cannot learn them",
            test_labels_path.display(),
            train_labels_path.display()
        ));
    }
    let class_names = match class_names {
        Some(names) => check_class_names(names, num_classes, name, &train_labels_path)?,
        None => (0..num_classes).map(|c| c.to_string()).collect(),
    };
    let (height, width) = train.shape;
    Ok(Dataset {
        held_out: "test",
        name: name.to_string(),
        channels: 1,
        height,
        width,
        num_classes,
        class_names,
        train: train.split,
        test: test.split,
    })
}

/// Reads an IDX images file: returns (count, rows, cols, pixels), pixels sample-major.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gzipped(path, IdxKind::Images)?;
    let dims = parse_header(path, &bytes, IdxKind::Images)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(Error::file(
            path,
            format!("IDX header says images are {rows}x{cols}; rows and columns must be non-zero"),
        ));
    }
    let data = take_data(path, bytes, IdxKind::Images, &dims)?;
    Ok((count, rows, cols, data))
}

/// Reads an IDX labels file: one u8 class index per sample.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzipped(path, IdxKind::Labels)?;
    let dims = parse_header(path, &bytes, IdxKind::Labels)?;
    take_data(path, bytes, IdxKind::Labels, &dims)
}

/// Finds `stem` in `dir`, else `stem.gz`; the error lists both paths tried.
pub fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    for candidate in [&plain, &gz] {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    let folder_note = if dir.is_dir() {
        ""
    } else if dir.exists() {
        " (the data folder is not a folder)"
    } else {
        " (the data folder does not exist)"
    };
    Err(Error::file(
        dir,
        format!(
            "no {stem} or {stem}.gz found{folder_note}; tried {} and {}; \
             set the data folder with {DATA_DIR_FLAG}",
            plain.display(),
            gz.display()
        ),
    ))
}

/// One split as read from disk, with its image size for the train/test comparison.
struct LoadedSplit {
    split: Split,
    shape: (usize, usize),
}

fn load_split(images_path: &Path, labels_path: &Path) -> Result<LoadedSplit> {
    let (count, rows, cols, images) = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if count != labels.len() {
        return Err(Error::file(
            images_path,
            format!(
                "{count} images here but {} labels in {}; the counts must match",
                labels.len(),
                labels_path.display()
            ),
        ));
    }
    if count == 0 {
        return Err(Error::file(
            images_path,
            "the file holds 0 images; a split needs at least one",
        ));
    }
    Ok(LoadedSplit { split: Split::in_memory(images, labels), shape: (rows, cols) })
}

/// 10 classes unless the labels go beyond 9 (digit data sets with a missing class still get 10).
fn num_classes_for(max_label: Option<u8>) -> usize {
    match max_label {
        Some(m) if m >= 10 => m as usize + 1,
        _ => 10,
    }
}

fn check_class_names(
    names: Vec<String>,
    num_classes: usize,
    name: &str,
    labels_path: &Path,
) -> Result<Vec<String>> {
    if names.len() == num_classes {
        return Ok(names);
    }
    Err(Error::file(
        labels_path,
        format!(
            "the labels imply {num_classes} classes but {} class names are known for {name}",
            names.len()
        ),
    ))
}

/// Which of the two IDX layouts a file is expected to hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdxKind {
    Images,
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }
    fn dims(self) -> usize {
        match self {
            IdxKind::Images => 3,
            IdxKind::Labels => 1,
        }
    }
    fn header_len(self) -> usize {
        4 + 4 * self.dims()
    }
    fn noun(self) -> &'static str {
        match self {
            IdxKind::Images => "images",
            IdxKind::Labels => "labels",
        }
    }
    fn other(self) -> IdxKind {
        match self {
            IdxKind::Images => IdxKind::Labels,
            IdxKind::Labels => IdxKind::Images,
        }
    }
}

/// Reads the whole file, gunzipping it when it starts with the gzip magic bytes. A gzipped file
/// is inflated only as far as its IDX header says the data goes (plus one byte, so that
/// `take_data` can report extra data): a small file that inflates to gigabytes stops there.
fn read_maybe_gzipped(path: &Path, kind: IdxKind) -> Result<Vec<u8>> {
    let raw = crate::data::read_file(path)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let gunzip = |e: std::io::Error| {
        Error::file(path, format!("cannot gunzip (it starts with the gzip magic bytes): {e}"))
    };
    let mut decoder = MultiGzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    (&mut decoder).take(kind.header_len() as u64).read_to_end(&mut out).map_err(gunzip)?;
    if out.len() == kind.header_len() {
        let declared = out[4..]
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64)
            .try_fold(1u64, |a, d| a.checked_mul(d));
        // An impossible header reads no further: take_data names the shape.
        let limit = declared.unwrap_or(0);
        if let Some(why) = crate::device::memory_shortfall(Some(limit), "its declared data") {
            return Err(Error::file(path, why));
        }
        out.reserve((limit as usize).min(gzip_size_hint(&raw)));
        decoder.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(gunzip)?;
    }
    Ok(out)
}

/// The gzip trailer stores the decoded size mod 2^32; good enough to avoid regrowing the buffer.
fn gzip_size_hint(raw: &[u8]) -> usize {
    match raw.len().checked_sub(4).and_then(|at| raw.get(at..)) {
        Some(&[a, b, c, d]) => (u32::from_le_bytes([a, b, c, d]) as usize).min(MAX_CAPACITY_HINT),
        _ => 0,
    }
}

/// Checks the magic and returns the dimensions from the header.
fn parse_header(path: &Path, bytes: &[u8], kind: IdxKind) -> Result<Vec<usize>> {
    let header_len = kind.header_len();
    let words: Vec<u32> = bytes[..header_len.min(bytes.len())]
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    // The magic goes first, so a short file of the other kind is reported as such.
    if let Some(&magic) = words.first() {
        check_magic(path, magic, kind)?;
    }
    if bytes.len() < header_len {
        return Err(Error::file(
            path,
            format!(
                "file is {} bytes, shorter than the {header_len}-byte IDX {} header",
                bytes.len(),
                kind.noun()
            ),
        ));
    }
    Ok(words[1..].iter().map(|&d| d as usize).collect())
}

fn check_magic(path: &Path, found: u32, kind: IdxKind) -> Result<()> {
    let expected = kind.magic();
    if found == expected {
        return Ok(());
    }
    let hint = magic_hint(found, kind);
    Err(Error::file(
        path,
        format!(
            "bad IDX magic 0x{found:08x}, expected 0x{expected:08x} (u8 {}){hint}",
            kind.noun()
        ),
    ))
}

/// A guess at what the file is instead, to make a wrong-magic error actionable.
fn magic_hint(found: u32, kind: IdxKind) -> String {
    let [b0, b1, data_type, rank] = found.to_be_bytes();
    if found == kind.other().magic() {
        format!(
            "; this looks like an IDX {} file where {} were expected",
            kind.other().noun(),
            kind.noun()
        )
    } else if b0 == 0 && b1 == 0 {
        format!("; this is an IDX file of data type 0x{data_type:02x} with {rank} dimensions")
    } else if found.to_be_bytes().starts_with(b"<") {
        "; this looks like an HTML or XML page (a failed download?)".to_string()
    } else {
        "; this is not an IDX file".to_string()
    }
}

/// Strips the header and checks that exactly the announced number of data bytes follows.
fn take_data(path: &Path, mut bytes: Vec<u8>, kind: IdxKind, dims: &[usize]) -> Result<Vec<u8>> {
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        Error::file(path, format!("IDX header shape {shape} is too large to hold in memory"))
    })?;
    let actual = bytes.len() - kind.header_len();
    if actual < expected {
        return Err(Error::file(
            path,
            format!(
                "header says {shape} {} = {expected} data bytes, but only {actual} follow; \
                 the file is truncated",
                kind.noun()
            ),
        ));
    }
    if actual > expected {
        return Err(Error::file(
            path,
            format!(
                "header says {shape} {} = {expected} data bytes, but {actual} follow \
                 ({} trailing extra bytes)",
                kind.noun(),
                actual - expected
            ),
        ));
    }
    // Shift the data down in place instead of copying it into a second buffer.
    bytes.drain(..kind.header_len());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_dir::TempDir;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        std::iter::once(magic).chain(dims.iter().copied()).flat_map(u32::to_be_bytes).collect()
    }

    fn pixels(count: usize, rows: usize, cols: usize) -> Vec<u8> {
        (0..count * rows * cols).map(|i| (i * 7 % 256) as u8).collect()
    }

    fn images_file(count: usize, rows: usize, cols: usize) -> Vec<u8> {
        let mut bytes = header(IMAGES_MAGIC, &[count as u32, rows as u32, cols as u32]);
        bytes.extend(pixels(count, rows, cols));
        bytes
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut bytes = header(LABELS_MAGIC, &[labels.len() as u32]);
        bytes.extend_from_slice(labels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).expect("gzip fixture");
        enc.finish().expect("gzip fixture")
    }

    /// Writes a complete, valid data set: 5 train and 3 test images of 4x3.
    fn write_valid_set(dir: &TempDir, train_labels: &[u8], test_labels: &[u8]) {
        dir.write(TRAIN_IMAGES, &images_file(train_labels.len(), 4, 3));
        dir.write(&format!("{TRAIN_LABELS}.gz"), &gzip(&labels_file(train_labels)));
        dir.write(&format!("{TEST_IMAGES}.gz"), &gzip(&images_file(test_labels.len(), 4, 3)));
        dir.write(TEST_LABELS, &labels_file(test_labels));
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
    fn raw_and_gz_images_load_the_same_bytes() {
        let dir = TempDir::new("raw-gz-images");
        let raw = dir.write("raw-images", &images_file(6, 5, 4));
        let gz = dir.write("raw-images.gz", &gzip(&images_file(6, 5, 4)));
        for path in [raw, gz] {
            let (count, rows, cols, data) = read_images(&path).expect("valid images");
            assert_eq!((count, rows, cols), (6, 5, 4));
            assert_eq!(data, pixels(6, 5, 4));
        }
    }

    #[test]
    fn raw_and_gz_labels_load_the_same_bytes() {
        let dir = TempDir::new("raw-gz-labels");
        let labels = [3u8, 1, 4, 1, 5, 9, 2, 6];
        let raw = dir.write("labels", &labels_file(&labels));
        let gz = dir.write("labels.gz", &gzip(&labels_file(&labels)));
        assert_eq!(read_labels(&raw).expect("raw labels"), labels);
        assert_eq!(read_labels(&gz).expect("gz labels"), labels);
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = TempDir::new("gzip-by-content");
        let gz_without_suffix = dir.write("images", &gzip(&images_file(2, 2, 2)));
        let raw_with_suffix = dir.write("other.gz", &images_file(2, 2, 2));
        assert_eq!(read_images(&gz_without_suffix).expect("gz").3, pixels(2, 2, 2));
        assert_eq!(read_images(&raw_with_suffix).expect("raw").3, pixels(2, 2, 2));
    }

    #[test]
    fn empty_labels_file_is_valid_idx() {
        let dir = TempDir::new("empty-labels");
        let path = dir.write("labels", &labels_file(&[]));
        assert_eq!(read_labels(&path).expect("empty labels"), Vec::<u8>::new());
    }

    #[test]
    fn find_file_prefers_plain_then_gz() {
        let dir = TempDir::new("find-file");
        dir.write("stem.gz", b"x");
        assert_eq!(find_file(dir.path(), "stem").expect("gz"), dir.path().join("stem.gz"));
        dir.write("stem", b"x");
        assert_eq!(find_file(dir.path(), "stem").expect("plain"), dir.path().join("stem"));
    }

    #[test]
    fn missing_file_names_both_candidates_and_the_flag() {
        let dir = TempDir::new("missing");
        let plain = dir.path().join(TRAIN_IMAGES).display().to_string();
        let gz = format!("{plain}.gz");
        assert_err(find_file(dir.path(), TRAIN_IMAGES), TRAIN_IMAGES, &[&plain, &gz, "--data-dir"]);
        assert_err(
            load_dir(&dir.path().join("nope"), "mnist", None),
            "nope",
            &["does not exist", "--data-dir"],
        );
        let file = dir.write("plain-file", b"x");
        assert_err(load_dir(&file, "mnist", None), "plain-file", &["not a folder", "--data-dir"]);
    }

    #[test]
    fn file_shorter_than_header_is_an_error() {
        let dir = TempDir::new("short-header");
        let images = dir.write("tiny-images", &[0, 0, 8, 3, 0, 0]);
        let labels = dir.write("tiny-labels", &[0, 0, 8]);
        let empty = dir.write("empty-file", &[]);
        assert_err(read_images(&images), "tiny-images", &["6 bytes", "16-byte", "header"]);
        assert_err(read_labels(&labels), "tiny-labels", &["3 bytes", "8-byte", "header"]);
        assert_err(read_images(&empty), "empty-file", &["0 bytes", "header"]);
    }

    #[test]
    fn wrong_magic_reports_found_and_expected() {
        let dir = TempDir::new("magic");
        let mut bytes = images_file(1, 2, 2);
        bytes[3] = 0x0d; // an IDX float32 file
        let path = dir.write("float-images", &bytes);
        assert_err(read_images(&path), "float-images", &["magic", "0x0000080d", "0x00000803"]);
        let path = dir.write("page.html", b"<!DOCTYPE html><html></html>");
        assert_err(read_labels(&path), "page.html", &["magic", "0x00000801", "HTML"]);
    }

    #[test]
    fn swapped_images_and_labels_are_recognised() {
        let dir = TempDir::new("swapped");
        let labels = dir.write("some-labels", &labels_file(&[1, 2]));
        let images = dir.write("some-images", &images_file(2, 2, 2));
        let err = read_images(&labels);
        assert_err(err, "some-labels", &["magic", "0x00000801", "labels file", "images were"]);
        let err = read_labels(&images);
        assert_err(err, "some-images", &["magic", "0x00000803", "images file", "labels were"]);
    }

    #[test]
    fn truncated_data_reports_expected_and_actual_bytes() {
        let dir = TempDir::new("truncated");
        let mut images = images_file(3, 4, 5);
        images.truncate(images.len() - 7);
        let path = dir.write("cut-images", &images);
        assert_err(read_images(&path), "cut-images", &["60 data bytes", "only 53", "truncated"]);
        let mut labels = labels_file(&[1, 2, 3, 4]);
        labels.pop();
        let path = dir.write("cut-labels", &labels);
        assert_err(read_labels(&path), "cut-labels", &["4 data bytes", "only 3"]);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = TempDir::new("trailing");
        let mut images = images_file(2, 2, 2);
        images.extend([9, 9]);
        let path = dir.write("long-images", &images);
        assert_err(read_images(&path), "long-images", &["8 data bytes", "10 follow", "2 trailing"]);
        let mut labels = labels_file(&[1]);
        labels.push(0);
        let path = dir.write("long-labels.gz", &gzip(&labels));
        assert_err(read_labels(&path), "long-labels.gz", &["1 trailing"]);
    }

    #[test]
    fn zero_rows_or_cols_is_an_error() {
        let dir = TempDir::new("zero-dims");
        let path = dir.write("flat-images", &header(IMAGES_MAGIC, &[3, 0, 28]));
        assert_err(read_images(&path), "flat-images", &["0x28", "non-zero"]);
        let path = dir.write("thin-images", &header(IMAGES_MAGIC, &[3, 28, 0]));
        assert_err(read_images(&path), "thin-images", &["28x0", "non-zero"]);
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let dir = TempDir::new("corrupt-gz");
        let good = gzip(&images_file(20, 8, 8));
        let mut flipped = good.clone();
        for b in &mut flipped[12..good.len() - 8] {
            *b ^= 0x5a;
        }
        let path = dir.write("flipped.gz", &flipped);
        assert_err(read_images(&path), "flipped.gz", &["gunzip", "gzip"]);
        let path = dir.write("cut.gz", &good[..good.len() / 2]);
        assert_err(read_images(&path), "cut.gz", &["gunzip", "gzip"]);
    }

    #[test]
    fn load_dir_builds_a_dataset() {
        let dir = TempDir::new("load-dir");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[5, 6, 7]);
        let ds = load_dir(dir.path(), "idx", None).expect("valid set");
        assert_eq!(ds.name, "idx");
        assert_eq!((ds.channels, ds.height, ds.width), (1, 4, 3));
        assert_eq!(ds.num_classes, 10);
        assert_eq!(ds.class_names, (0..10).map(|c| c.to_string()).collect::<Vec<_>>());
        assert_eq!((ds.train.len, ds.test.len), (5, 3));
        assert_eq!(ds.train.images().unwrap(), pixels(5, 4, 3));
        assert_eq!(ds.test.images().unwrap(), pixels(3, 4, 3));
        assert_eq!(ds.train.labels, [0, 1, 2, 3, 4]);
        assert_eq!(ds.test.labels, [5, 6, 7]);
    }

    #[test]
    fn load_dir_counts_classes_beyond_ten() {
        let dir = TempDir::new("many-classes");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[5, 6, 12]);
        let ds = load_dir(dir.path(), "idx", None).expect("valid set");
        assert_eq!(ds.num_classes, 13);
        assert_eq!(ds.class_names.len(), 13);
        assert_eq!(ds.class_names[12], "12");
    }

    #[test]
    fn load_dir_uses_given_class_names_and_checks_their_count() {
        let dir = TempDir::new("class-names");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[5, 6, 7]);
        let names: Vec<String> = (0..10).map(|c| format!("class{c}")).collect();
        let ds = load_dir(dir.path(), "fashion-mnist", Some(names.clone())).expect("valid set");
        assert_eq!(ds.class_names, names);
        assert_eq!(ds.name, "fashion-mnist");
        let few = names[..4].to_vec();
        let err = load_dir(dir.path(), "fashion-mnist", Some(few));
        assert_err(err, TRAIN_LABELS, &["10 classes", "4 class names", "fashion-mnist"]);
    }

    #[test]
    fn image_and_label_count_mismatch_names_both_files() {
        let dir = TempDir::new("count-mismatch");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[5, 6, 7]);
        dir.write(TRAIN_IMAGES, &images_file(4, 4, 3));
        let err = load_dir(dir.path(), "idx", None);
        assert_err(err, TRAIN_IMAGES, &[TRAIN_LABELS, "4 images", "5 labels"]);
    }

    #[test]
    fn train_and_test_image_sizes_must_match() {
        let dir = TempDir::new("size-mismatch");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[5, 6, 7]);
        dir.write(&format!("{TEST_IMAGES}.gz"), &gzip(&images_file(3, 3, 4)));
        let err = load_dir(dir.path(), "idx", None);
        assert_err(err, TEST_IMAGES, &[TRAIN_IMAGES, "3x4", "4x3"]);
    }

    #[test]
    fn empty_split_is_an_error() {
        let dir = TempDir::new("empty-split");
        write_valid_set(&dir, &[0, 1, 2, 3, 4], &[]);
        assert_err(load_dir(dir.path(), "idx", None), TEST_IMAGES, &["0 images"]);
    }

    #[test]
    fn real_mnist_loads_when_present() {
        let Some(dir) = crate::data::shared_data_dir("mnist") else { return };
        let ds = load_dir(&dir, "mnist", None).expect("MNIST should load");
        assert_eq!((ds.train.len, ds.test.len), (60_000, 10_000));
        assert_eq!((ds.channels, ds.height, ds.width, ds.num_classes), (1, 28, 28, 10));
        assert_eq!(ds.train.images().unwrap().len(), 60_000 * 784);
        assert_eq!(ds.test.images().unwrap().len(), 10_000 * 784);
        let histogram = |labels: &[u8]| {
            let mut counts = [0usize; 10];
            for &l in labels {
                counts[l as usize] += 1;
            }
            counts
        };
        let train = histogram(&ds.train.labels);
        let test = histogram(&ds.test.labels);
        assert_eq!(train.iter().sum::<usize>(), 60_000);
        assert_eq!(test.iter().sum::<usize>(), 10_000);
        // Published MNIST class counts.
        assert_eq!(train, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
        assert_eq!(test, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    }

    /// A small gzip that inflates far past what its header declares (a "gzip bomb") is read only
    /// as far as the header says, then refused for the extra data.
    #[test]
    fn gzip_past_the_declared_size_is_not_inflated() {
        let mut bomb = header(IMAGES_MAGIC, &[2, 28, 28]);
        bomb.resize(bomb.len() + (64 << 20), 0);
        let packed = gzip(&bomb);
        assert!(packed.len() < 1 << 20, "compresses well");
        let dir = TempDir::new("gzip-bomb");
        let path = dir.write("train-images-idx3-ubyte.gz", &packed);
        let read = read_maybe_gzipped(&path, IdxKind::Images).unwrap();
        assert_eq!(read.len(), 16 + 2 * 28 * 28 + 1, "inflated only to the header's size + 1");
        let err = read_images(&path).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    }

    #[test]
    fn mnist_labels_past_nine_are_an_error_naming_the_file() {
        let dir = TempDir::new("mnist-200");
        write_valid_set(&dir, &[0, 1, 200, 3, 4], &[5, 6, 7]);
        let err = load_dir(dir.path(), "mnist", None);
        assert_err(err, TRAIN_LABELS, &["label 200 at index 2", "0 to 9"]);
        // Any other IDX set may have more classes (see load_dir_counts_classes_beyond_ten).
        assert_eq!(load_dir(dir.path(), "idx", None).expect("idx").num_classes, 201);
    }
}

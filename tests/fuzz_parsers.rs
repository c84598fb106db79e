//! Property tests of every parser a user's file reaches: valid IDX (plain and gzip), CIFAR-10,
//! safetensors and image files, mutated (cut short, bytes overwritten, header fields set to 0,
//! 1, the maximum or values whose products overflow). Each case must end in a valid result or
//! an error that names the file: never a panic, an abort on a huge allocation, or a hang.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::cli::TempDir;
use proptest::prelude::*;
use steepest::checkpoint::{self, CheckpointMeta};
use steepest::cpu::CpuBackend;
use steepest::data::{cifar, folder, idx};
use steepest::nn::{Model, ModelSpec};

/// A file `name` in a folder of its own, removed with it when the case is done (kept when
/// the case fails).
struct TempFile(#[allow(dead_code)] TempDir, PathBuf);

impl std::ops::Deref for TempFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.1
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.1
    }
}

fn temp(name: &str) -> TempFile {
    let dir = TempDir::new(&format!("steepest-fuzz-{}-{name}", std::process::id()));
    let path = dir.join(name);
    TempFile(dir, path)
}

/// One way to damage a file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Keep only the first `n` bytes (modulo the length).
    Truncate(usize),
    /// Overwrite bytes at positions (modulo the length).
    Overwrite(Vec<(usize, u8)>),
    /// Set a big-endian u32 at a 4-byte-aligned offset (within the first `span` bytes).
    Field(usize, u32),
    /// Set a little-endian u64 at offset 0 (safetensors' header length).
    Prefix(u64),
    /// Append bytes.
    Append(Vec<u8>),
}

/// Header values that break naive code: 0, 1, the maximum, and values whose products overflow.
fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(65_536),
        Just(1 << 31),
        Just(3073),
        any::<u32>()
    ]
}

fn mutation(span: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Mutation::Overwrite),
        (0..span / 4, edge_u32()).prop_map(|(i, v)| Mutation::Field(4 * i, v)),
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 40), any::<u64>()]
            .prop_map(Mutation::Prefix),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

fn apply(valid: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = valid.to_vec();
    match m {
        Mutation::Truncate(n) => v.truncate(n % v.len()),
        Mutation::Overwrite(at) => {
            for &(i, b) in at {
                let i = i % v.len();
                v[i] = b;
            }
        }
        Mutation::Field(at, x) => {
            if at + 4 <= v.len() {
                v[*at..at + 4].copy_from_slice(&x.to_be_bytes());
            }
        }
        Mutation::Prefix(x) => v[..8].copy_from_slice(&x.to_le_bytes()),
        Mutation::Append(tail) => v.extend_from_slice(tail),
    }
    v
}

/// The error names the file, as every user-facing error must.
fn names_file<T>(r: steepest::Result<T>, path: &Path) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        prop_assert!(e.to_string().contains(&name), "error does not name {name}: {e}");
    }
    Ok(())
}

fn idx_images() -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [3u32, 4, 4] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend((0..48).map(|i| i as u8));
    v
}

fn idx_labels() -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1, 0, 0, 0, 3];
    v.extend([1, 7, 9]);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A small conv + batch norm checkpoint with every kind of metadata, written once.
fn safetensors_file() -> Vec<u8> {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(write_safetensors).clone()
}

fn write_safetensors() -> Vec<u8> {
    let mut cpu = CpuBackend::new();
    let spec: ModelSpec = "conv:2:3,bn,relu,flatten,linear".parse().unwrap();
    let model = Model::new(&mut cpu, &spec, steepest::nn::Shape::new(1, 6, 6), 3, 0).unwrap();
    let meta = CheckpointMeta {
        model: Some(spec),
        input_shape: Some([1, 6, 6]),
        class_names: Some(vec!["a".into(), "b".into(), "c".into()]),
        normalization: Some((vec![0.5], vec![0.25])),
        ..Default::default()
    };
    let path = temp("valid.safetensors");
    checkpoint::save(&path, &model.export(&mut cpu).unwrap(), &meta).unwrap();
    std::fs::read(path).unwrap()
}

fn image_file(format: image::ImageFormat) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 77]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, format).unwrap();
    out.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn idx_images_and_labels(m in mutation(16), zipped in any::<bool>(), labels in any::<bool>()) {
        let valid = if labels { idx_labels() } else { idx_images() };
        let mut bytes = apply(&valid, &m);
        let name = if zipped { bytes = gzip(&bytes); "images-idx3-ubyte.gz" } else { "images-idx3-ubyte" };
        let path = temp(name);
        std::fs::write(&path, &bytes).unwrap();
        if labels {
            names_file(idx::read_labels(&path), &path)?;
        } else {
            let r = idx::read_images(&path);
            if let Ok((n, rows, cols, px)) = &r {
                prop_assert_eq!(px.len(), n * rows * cols);
            }
            names_file(r, &path)?;
        }
    }

    #[test]
    fn gzip_streams_damaged_after_compression(m in mutation(16)) {
        let bytes = apply(&gzip(&idx_images()), &m);
        let path = temp("damaged-idx3-ubyte.gz");
        std::fs::write(&path, &bytes).unwrap();
        names_file(idx::read_images(&path), &path)?;
    }

    #[test]
    fn cifar_batches(m in mutation(3073 * 2), records in 1usize..3) {
        let valid: Vec<u8> = (0..3073 * records).map(|i| if i % 3073 == 0 { (i % 10) as u8 } else { i as u8 }).collect();
        let path = temp("data_batch_1.bin");
        std::fs::write(&path, apply(&valid, &m)).unwrap();
        let r = cifar::read_batch(&path);
        if let Ok((images, labels)) = &r {
            prop_assert_eq!(images.len(), labels.len() * 3072);
        }
        names_file(r, &path)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Loading, then building the model it describes and importing its tensors (what `eval`
    /// and `predict` do): header lengths, JSON, shapes, offsets and metadata all mutated.
    #[test]
    fn safetensors_checkpoints(m in mutation(64)) {
        let valid = safetensors_file();
        let path = temp("fuzz.safetensors");
        std::fs::write(&path, apply(&valid, &m)).unwrap();
        let r = checkpoint::load(&path).and_then(|c| {
            let mut cpu = CpuBackend::new();
            c.restore(&mut cpu, &path).map(|_| ())
        });
        names_file(r, &path)?;
    }
}

/// A change inside the safetensors header, where byte flips mostly just break the JSON.
#[derive(Clone, Debug)]
enum HeaderEdit {
    /// Set dimension `d` of tensor `t`'s shape.
    Shape(usize, usize, u64),
    /// Set tensor `t`'s data offsets.
    Offsets(usize, u64, u64),
    /// Set tensor `t`'s dtype.
    Dtype(usize, &'static str),
    /// Set a metadata key.
    Meta(&'static str, String),
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let big =
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 32), Just(1 << 62), 0u64..100];
    let meta = prop_oneof![
        Just("mlp:10000000000".to_string()),
        Just("conv:0:3,linear".to_string()),
        Just("linear:18446744073709551615,linear".to_string()),
        Just("1,4294967296,4294967296".to_string()),
        Just("0,0,0".to_string()),
        Just("[\"a\"]".to_string()),
        Just("{\"mean\": [1e40], \"std\": [1e-45]}".to_string()),
        Just("{\"mean\": [], \"std\": []}".to_string()),
        Just("{\"epoch\": 18446744073709551615}".to_string()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        (0usize..8, 0usize..4, big.clone()).prop_map(|(t, d, v)| HeaderEdit::Shape(t, d, v)),
        (0usize..8, big.clone(), big).prop_map(|(t, a, b)| HeaderEdit::Offsets(t, a, b)),
        (0usize..8, prop_oneof![Just("F16"), Just("I64"), Just("U8"), Just("BOGUS")])
            .prop_map(|(t, d)| HeaderEdit::Dtype(t, d)),
        (
            prop_oneof![
                Just("steepest.model"),
                Just("steepest.input_shape"),
                Just("steepest.class_names"),
                Just("steepest.normalize"),
                Just("steepest.progress"),
                Just("steepest.config")
            ],
            meta
        )
            .prop_map(|(k, v)| HeaderEdit::Meta(k, v)),
    ]
}

fn edit_header(valid: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&valid[8..8 + n]).unwrap();
    let names: Vec<String> =
        header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    for e in edits {
        let tensor = |t: usize| names[t % names.len()].clone();
        match e {
            HeaderEdit::Shape(t, d, v) => {
                let shape = header[tensor(*t)]["shape"].as_array_mut().unwrap();
                if shape.is_empty() {
                    shape.push((*v).into());
                } else {
                    let i = d % shape.len();
                    shape[i] = (*v).into();
                }
            }
            HeaderEdit::Offsets(t, a, b) => {
                header[tensor(*t)]["data_offsets"] = serde_json::json!([a, b]);
            }
            HeaderEdit::Dtype(t, d) => header[tensor(*t)]["dtype"] = (*d).into(),
            HeaderEdit::Meta(k, v) => header["__metadata__"][*k] = v.clone().into(),
        }
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&valid[8 + n..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Shapes, offsets, dtypes and metadata set to edge values, then loaded and restored.
    #[test]
    fn safetensors_headers(edits in prop::collection::vec(header_edit(), 1..4)) {
        let path = temp("edited.safetensors");
        std::fs::write(&path, edit_header(&safetensors_file(), &edits)).unwrap();
        let r = checkpoint::load(&path).and_then(|c| {
            let mut cpu = CpuBackend::new();
            c.restore(&mut cpu, &path).map(|_| ())
        });
        names_file(r, &path)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn image_files(m in mutation(32), which in 0usize..4) {
        let (format, ext) = [
            (image::ImageFormat::Png, "png"),
            (image::ImageFormat::Jpeg, "jpg"),
            (image::ImageFormat::Gif, "gif"),
            (image::ImageFormat::Bmp, "bmp"),
        ][which];
        let path = temp(&format!("photo.{ext}"));
        std::fs::write(&path, apply(&image_file(format), &m)).unwrap();
        let r = folder::decode(&path, 3, 8, 8);
        if let Ok(px) = &r {
            prop_assert_eq!(px.len(), 3 * 8 * 8);
        }
        names_file(r, &path)?;
    }
}

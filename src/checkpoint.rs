//! Checkpoints as safetensors with PyTorch `state_dict` names and layouts (`0.weight` [out, in],
//! `0.bias`, `2.weight`, ...), f32, so `model.load_state_dict(safetensors.torch.load_file(p))`
//! works on the equivalent `nn.Sequential`, and a file PyTorch saved loads here. The model spec,
//! input shape and class names ride in the file's metadata, so `eval` needs no `--model`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::{HostTensors, ModelSpec};
use crate::{Error, Result};

/// What a checkpoint says about the model besides its tensors. Every field is optional so that
/// files written by PyTorch (no metadata) still load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMeta {
    pub model: Option<ModelSpec>,
    /// `[channels, height, width]` of one input sample.
    pub input_shape: Option<[usize; 3]>,
    pub class_names: Option<Vec<String>>,
    pub dataset: Option<String>,
    /// The steepest version that wrote the file.
    pub version: Option<String>,
    /// Per-channel input `(mean, std)` the model was trained with.
    pub normalization: Option<(Vec<f32>, Vec<f32>)>,
    /// The training run's resolved configuration (every `train` flag, as JSON).
    pub config: Option<serde_json::Value>,
    /// Resume files only: where the run stood when it was saved.
    pub progress: Option<crate::train::Progress>,
}

pub struct Checkpoint {
    pub tensors: HostTensors,
    pub meta: CheckpointMeta,
    /// A resume file's optimizer state (`optimizer.*` tensors); empty in a plain checkpoint.
    pub optimizer: HostTensors,
}

const KEY_MODEL: &str = "steepest.model";
const KEY_INPUT: &str = "steepest.input_shape";
const KEY_CLASSES: &str = "steepest.class_names";
const KEY_DATASET: &str = "steepest.dataset";
const KEY_VERSION: &str = "steepest.version";
const KEY_NORMALIZE: &str = "steepest.normalize";
const KEY_CONFIG: &str = "steepest.config";
const KEY_PROGRESS: &str = "steepest.progress";

/// The prefix of the optimizer's state tensors in a resume file.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Where `--save FILE` keeps what `--resume` needs (the weights, the optimizer state, the
/// run's position and configuration): `NAME.resume.safetensors` beside `NAME.safetensors`, so
/// the checkpoint itself stays a plain PyTorch `state_dict` that loads with `strict=True`.
pub fn resume_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    path.with_file_name(format!("{stem}.resume.safetensors"))
}

/// Writes `tensors` to `path` atomically: into a temporary file beside it, then renamed, so an
/// interrupted save never leaves a half-written checkpoint under the real name.
pub fn save(path: &Path, tensors: &HostTensors, meta: &CheckpointMeta) -> Result<()> {
    // The temporary file is renamed over `path`: only ever over a regular file.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(Error::file(path, "exists and is not a regular file; not replaced"));
    }
    // PyTorch keeps batch norm's `num_batches_tracked` as an int64 scalar.
    let is_count = |name: &str| name.ends_with(".num_batches_tracked");
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(name, _, v)| {
            if is_count(name) {
                (v.first().copied().unwrap_or(0.0) as i64).to_le_bytes().to_vec()
            } else {
                bytemuck::cast_slice(v).to_vec()
            }
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let dtype = if is_count(name) { Dtype::I64 } else { Dtype::F32 };
            TensorView::new(dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::file(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    info.insert(KEY_VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string());
    if let Some(m) = &meta.model {
        info.insert(KEY_MODEL.to_string(), m.to_string());
    }
    if let Some([c, h, w]) = meta.input_shape {
        info.insert(KEY_INPUT.to_string(), format!("{c},{h},{w}"));
    }
    if let Some(names) = &meta.class_names {
        info.insert(KEY_CLASSES.to_string(), serde_json::to_string(names).unwrap_or_default());
    }
    if let Some((mean, std)) = &meta.normalization {
        info.insert(
            KEY_NORMALIZE.to_string(),
            serde_json::json!({ "mean": mean, "std": std }).to_string(),
        );
    }
    if let Some(d) = &meta.dataset {
        info.insert(KEY_DATASET.to_string(), d.clone());
    }
    if let Some(c) = &meta.config {
        info.insert(KEY_CONFIG.to_string(), c.to_string());
    }
    if let Some(p) = &meta.progress {
        info.insert(KEY_PROGRESS.to_string(), serde_json::to_string(p).unwrap_or_default());
    }
    let data = safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| Error::file(path, format!("could not encode the checkpoint: {e}")))?;
    write_atomic(path, &data, "the checkpoint")
}

/// Writes `data` to `path` through a temporary file beside it that is synced and renamed over
/// `path`, so a crash or a full disk leaves the old file or the new one, never half of one.
/// `what` names the file in the error.
pub fn write_atomic(path: &Path, data: &[u8], what: &str) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(Error::file(path, "exists and is not a regular file; not replaced"));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    remove_stale_temp_files(dir, &file_name);
    // PID (for the stale-file sweep) and a per-process count: two saves to one path from one
    // process (threads) must not share a temporary file.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("could not write {what}: {e}"))
    })
}

/// Removes `.NAME.PID.N.tmp` files that a killed save left behind, when process PID is gone
/// (Linux: no /proc/PID), so they do not pile up run after run.
fn remove_stale_temp_files(dir: &Path, file_name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!(".{file_name}.");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        // `PID.N` (`PID` from older versions).
        let pid = rest.split('.').next().unwrap_or(rest);
        let alive = pid
            .parse::<u32>()
            .map_or(true, |p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
        if !alive && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads a checkpoint: f32 tensors by name (file order) and whatever metadata it has.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let data = crate::data::read_file(path)?;
    let st = SafeTensors::deserialize(&data)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let mut tensors: HostTensors = Vec::new();
    for name in st.names() {
        let view = st.tensor(name).map_err(|e| Error::file(path, format!("{name}: {e}")))?;
        if name.ends_with(".num_batches_tracked")
            && view.dtype() == Dtype::I64
            && view.data().len() == 8
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(view.data());
            tensors.push((
                name.to_string(),
                view.shape().to_vec(),
                vec![i64::from_le_bytes(b) as f32],
            ));
            continue;
        }
        if view.dtype() != Dtype::F32 {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name:?} is {:?}; steepest reads F32 (in PyTorch: model.float() before saving)",
                    view.dtype()
                ),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // A diverged run's weights: every prediction from them would be noise (argmax of NaNs).
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            return Err(Error::file(
                path,
                format!(
                    "tensor {name:?} holds {bad} non-finite values (the first, {}, at index {i}): \
                     the run that wrote it diverged",
                    values[i]
                ),
            ));
        }
        tensors.push((name.to_string(), view.shape().to_vec(), values));
    }
    crate::nn::sort_state_dict(&mut tensors);
    let (_, header) = SafeTensors::read_metadata(&data)
        .map_err(|e| Error::file(path, format!("bad header: {e}")))?;
    let info = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| info.get(key).cloned();
    let model = match field(KEY_MODEL) {
        Some(s) => Some(
            s.parse::<ModelSpec>()
                .map_err(|e| Error::file(path, format!("metadata {KEY_MODEL}: {e}")))?,
        ),
        None => None,
    };
    let input_shape = match field(KEY_INPUT) {
        Some(s) => {
            let dims: Vec<usize> = s.split(',').filter_map(|d| d.trim().parse().ok()).collect();
            match dims[..] {
                // The same bounds as --image-size (4096) and a photo's channels: anything else
                // is a damaged file, and would divide by zero or allocate terabytes later.
                [c, h, w]
                    if (1..=4).contains(&c)
                        && (1..=4096).contains(&h)
                        && (1..=4096).contains(&w) =>
                {
                    Some([c, h, w])
                }
                [_, _, _] => {
                    return Err(Error::file(
                        path,
                        format!(
                            "metadata {KEY_INPUT} is {s:?}; expected 1 to 4 channels and a height \
                             and width from 1 to 4096"
                        ),
                    ))
                }
                _ => {
                    return Err(Error::file(
                        path,
                        format!("metadata {KEY_INPUT} is {s:?}; expected C,H,W"),
                    ))
                }
            }
        }
        None => None,
    };
    let class_names = match field(KEY_CLASSES) {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| {
            Error::file(path, format!("metadata {KEY_CLASSES}: {e}; expected a JSON list of names"))
        })?),
        None => None,
    };
    let normalization = match field(KEY_NORMALIZE) {
        Some(s) => {
            let v: serde_json::Value = serde_json::from_str(&s)
                .map_err(|e| Error::file(path, format!("metadata {KEY_NORMALIZE}: {e}")))?;
            let list = |k: &str| -> Option<Vec<f32>> {
                v.get(k)?.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
            };
            match (list("mean"), list("std")) {
                (Some(m), Some(s)) => Some((m, s)),
                _ => return Err(Error::file(path, format!("metadata {KEY_NORMALIZE} is {s:?}; expected {{\"mean\": [...], \"std\": [...]}}"))),
            }
        }
        None => None,
    };
    let config = match field(KEY_CONFIG) {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| {
            Error::file(path, format!("metadata {KEY_CONFIG}: {e}; expected a JSON object"))
        })?),
        None => None,
    };
    let progress = match field(KEY_PROGRESS) {
        Some(s) => Some(serde_json::from_str(&s).map_err(|e| {
            Error::file(
                path,
                format!(
                    "metadata {KEY_PROGRESS}: {e}; expected {{\"epoch\", \"in_epoch\", \"step\", \"stats\"}}"
                ),
            )
        })?),
        None => None,
    };
    let meta = CheckpointMeta {
        config,
        progress,
        normalization,
        model,
        input_shape,
        class_names,
        dataset: field(KEY_DATASET),
        version: field(KEY_VERSION),
    };
    // A resume file carries the optimizer's state beside the weights; keep it apart, so the
    // file also evaluates and fine-tunes like a plain checkpoint.
    let mut optimizer = Vec::new();
    if meta.progress.is_some() {
        let (opt, model): (Vec<_>, Vec<_>) =
            tensors.into_iter().partition(|(n, _, _)| n.starts_with(OPTIMIZER_PREFIX));
        optimizer = opt;
        tensors = model;
    }
    Ok(Checkpoint { tensors, meta, optimizer })
}

/// Recovers `(spec, input features, classes)` from the tensors of an MLP `nn.Sequential`
/// (Linear at positions 0, 2, 4, ...) when a file has no steepest metadata.
pub fn infer_mlp(tensors: &HostTensors, source: &Path) -> Result<(ModelSpec, usize, usize)> {
    let mut widths = Vec::new();
    let mut position = 0;
    while let Some((_, shape, _)) =
        tensors.iter().find(|(n, _, _)| *n == format!("{position}.weight"))
    {
        let [out, inp] = shape[..] else {
            return Err(Error::file(
                source,
                format!("{position}.weight has shape {shape:?}; expected [out, in]"),
            ));
        };
        if widths.is_empty() {
            widths.push(inp);
        } else if widths.last() != Some(&inp) {
            return Err(Error::file(
                source,
                format!(
                    "{position}.weight takes {inp} inputs but the layer before gives {}",
                    widths.last().unwrap_or(&0)
                ),
            ));
        }
        widths.push(out);
        position += 2;
    }
    if widths.len() < 2 {
        return Err(Error::file(
            source,
            "no model metadata and no 0.weight tensor: cannot tell which model this is; pass --model",
        ));
    }
    let hidden = widths[1..widths.len() - 1].to_vec();
    Ok((ModelSpec::mlp(&hidden), widths[0], widths[widths.len() - 1]))
}

/// What a checkpoint holds, resolved for use: the model, the shape of one input and the classes.
pub struct Described {
    pub spec: ModelSpec,
    pub input_shape: [usize; 3],
    pub class_names: Vec<String>,
}

impl Checkpoint {
    /// The model, input shape and class names the file describes, from its metadata or, for a
    /// PyTorch MLP file without any, from its tensor shapes (a 784-input MLP is taken as 28×28
    /// grey, 3072 as 32×32 RGB).
    pub fn describe(&self, source: &Path) -> Result<Described> {
        let (spec, inputs, classes) = match &self.meta.model {
            Some(spec) => {
                let classes = match &self.meta.class_names {
                    Some(names) => names.len(),
                    None => last_layer_width(&self.tensors).ok_or_else(|| {
                        Error::file(source, "has model metadata but no weight tensors")
                    })?,
                };
                (spec.clone(), None, classes)
            }
            None => {
                let (spec, inputs, classes) = infer_mlp(&self.tensors, source)?;
                (spec, Some(inputs), classes)
            }
        };
        let input_shape = match (self.meta.input_shape, inputs) {
            (Some(s), _) if s.contains(&0) => {
                return Err(Error::file(
                    source,
                    format!("{KEY_INPUT} is {s:?}; every dimension must be at least 1"),
                ))
            }
            (Some(s), _) => s,
            (None, Some(784)) => [1, 28, 28],
            (None, Some(3072)) => [3, 32, 32],
            (None, n) => {
                return Err(Error::file(
                    source,
                    format!(
                        "has no {KEY_INPUT} metadata{}; cannot tell the input image size",
                        n.map(|n| format!(" and its model takes {n} inputs")).unwrap_or_default()
                    ),
                ))
            }
        };
        let class_names = match &self.meta.class_names {
            Some(n) if n.len() == classes => n.clone(),
            _ => (0..classes).map(|i| i.to_string()).collect(),
        };
        Ok(Described { spec, input_shape, class_names })
    }

    /// Builds the model on `b` with this file's weights and input normalisation, ready for
    /// `Mode::Eval`.
    pub fn restore<B: crate::backend::Backend>(
        &self,
        b: &mut B,
        source: &Path,
    ) -> Result<(crate::nn::Model<B>, Described)> {
        let d = self.describe(source)?;
        let [c, h, w] = d.input_shape;
        let mut model = crate::nn::Model::new(
            b,
            &d.spec,
            crate::nn::Shape::new(c, h, w),
            d.class_names.len(),
            0,
        )
        .map_err(|e| Error::file(source, format!("its model does not build: {e}")))?;
        if let Some((mean, std)) = &self.meta.normalization {
            model
                .set_normalization(b, mean, std)
                .map_err(|e| Error::file(source, format!("metadata normalization: {e}")))?;
        }
        model.import(b, &self.tensors, &source.display().to_string())?;
        Ok((model, d))
    }
}

/// Output width of the last `N.weight` tensor (the classifier) of an `nn.Sequential`.
fn last_layer_width(tensors: &HostTensors) -> Option<usize> {
    tensors
        .iter()
        .filter_map(|(name, shape, _)| {
            let pos: usize = name.strip_suffix(".weight")?.parse().ok()?;
            Some((pos, *shape.first()?))
        })
        .max_by_key(|(pos, _)| *pos)
        .map(|(_, w)| w)
}

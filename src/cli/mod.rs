//! The commands behind `steepest <command>`.

pub mod bench;
pub mod devices;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod interrupt;
pub mod lr_find;
pub mod plot;
pub mod predict;
pub mod train;

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use steepest::data::folder::FolderOptions;
use steepest::data::{self, Dataset, OpenOptions};
use steepest::device::{AnyBackend, DeviceChoice};
use steepest::{Error, Result};

use crate::DataArgs;

static QUIET: AtomicBool = AtomicBool::new(false);
static REPORT_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// `--quiet`: from now on only errors are printed.
pub fn set_quiet(on: bool) {
    QUIET.store(on, Ordering::Relaxed);
    steepest::data::set_quiet(on);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `--json`: stdout carries the one JSON object; the human report moves to stderr.
pub fn set_report_to_stderr(on: bool) {
    REPORT_TO_STDERR.store(on, Ordering::Relaxed);
}

pub fn report_to_stderr() -> bool {
    REPORT_TO_STDERR.load(Ordering::Relaxed)
}

/// A line of the human report (stdout, or stderr under `--json`); nothing under `--quiet`.
macro_rules! say {
    ($($t:tt)*) => {
        if !$crate::cli::quiet() {
            if $crate::cli::report_to_stderr() {
                eprintln!($($t)*);
            } else {
                println!($($t)*);
            }
        }
    };
}

/// `note: ...` on stderr, unless `--quiet`.
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::cli::quiet() {
            eprintln!("note: {}", format!($($t)*));
        }
    };
}

/// `warning: ...` on stderr, unless `--quiet`.
macro_rules! warning {
    ($($t:tt)*) => {
        if !$crate::cli::quiet() {
            eprintln!("warning: {}", format!($($t)*));
        }
    };
}

pub(crate) use {note, say, warning};

/// Loads the data set the flags name and applies `--limit-test`. `shape` (from a checkpoint)
/// fixes the size and channels an image folder is read at; `test_only` skips decoding an image
/// folder's training images.
pub fn load_data(args: &DataArgs, shape: Option<[usize; 3]>, test_only: bool) -> Result<Dataset> {
    let mut folder = FolderOptions {
        size: args.image_size.map(|ImageSize(w, h)| (w, h)),
        channels: match args.color.as_str() {
            "auto" => None,
            "grey" | "gray" => Some(1),
            "rgb" => Some(3),
            other => {
                return Err(Error::config(
                    "--color",
                    format!("unknown value {other:?}; expected auto, grey or rgb"),
                ))
            }
        },
        val_split: args.val_split,
        memory_limit: args.memory_limit.saturating_mul(1 << 20),
        ..Default::default()
    };
    if let Some([c, h, w]) = shape {
        folder.size.get_or_insert((w, h));
        folder.channels.get_or_insert(c);
    }
    folder.validation_only = test_only;
    folder.progress = std::io::stderr().is_terminal();
    let opts = OpenOptions {
        dir: args.data_dir.clone(),
        download: args.download,
        progress: std::io::stderr().is_terminal(),
        folder,
    };
    let mut notes = Vec::new();
    let result = data::open_with(&args.dataset, &opts, &mut notes);
    for n in notes {
        note!("{n}");
    }
    let mut data = result?;
    if let Some(list) = &args.classes {
        data.select_classes(list)?;
    }
    if let Some(n) = args.limit_test {
        let size = data.sample_size();
        data.test.truncate(n, size);
    }
    Ok(data)
}

/// The data flags a checkpoint's run used, for `eval`: each one not `given` on the command
/// line is taken from the checkpoint's stored configuration (or, for files written before it
/// was stored, its data set's name), and a note says which were.
pub fn data_args_from_checkpoint(
    args: &DataArgs,
    given: &[String],
    ckpt: &steepest::checkpoint::Checkpoint,
    source: &std::path::Path,
) -> Result<DataArgs> {
    const TAKEN: [&str; 7] =
        ["dataset", "data_dir", "image_size", "color", "val_split", "memory_limit", "classes"];
    let mut stored = match &ckpt.meta.config {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if !stored.contains_key("dataset") {
        // Older checkpoints name the data set only; the built-in ones need no folder.
        if let Some(name) = ckpt.meta.dataset.as_deref() {
            if ["synthetic", "mnist", "fashion-mnist", "cifar10"].contains(&name) {
                stored.insert("dataset".into(), name.into());
            }
        }
    }
    let mut merged = serde_json::to_value(args)
        .map_err(|e| Error::config("--dataset", format!("cannot encode the flags: {e}")))?;
    let mut taken = Vec::new();
    if let serde_json::Value::Object(map) = &mut merged {
        for key in TAKEN {
            let (Some(saved), Some(now)) = (stored.get(key), map.get(key)) else { continue };
            if saved.is_null() || saved == now {
                continue;
            }
            let flag = format!("--{}", key.replace('_', "-"));
            if given.iter().any(|g| g == key) {
                if key == "dataset" {
                    warning!("{flag} {now}, but {} was trained on {saved}", source.display());
                }
            } else {
                let shown = saved.as_str().map_or(saved.to_string(), str::to_string);
                taken.push(format!("{flag} {shown}"));
                map.insert(key.to_string(), saved.clone());
            }
        }
    }
    if !taken.is_empty() {
        note!("{} (from {})", taken.join(" "), source.display());
    }
    serde_json::from_value(merged)
        .map_err(|e| Error::file(source, format!("metadata steepest.config: {e}")))
}

/// `--tta` as given, else the run's from the checkpoint `source` (a model trained with flips is
/// scored and used with them), else none.
pub fn tta_flag(
    given: Option<&str>,
    ckpt: &steepest::checkpoint::Checkpoint,
    source: &std::path::Path,
) -> Result<steepest::train::Tta> {
    if let Some(t) = given {
        return t.parse();
    }
    let saved = match ckpt.meta.config.as_ref().and_then(|c| c.get("tta")) {
        None => None,
        Some(t) => Some(t.as_str().ok_or_else(|| {
            Error::file(source, format!("metadata steepest.config: tta is {t}; expected a string"))
        })?),
    };
    match saved {
        Some(t) if t != "none" => {
            note!("--tta {t} (from {})", source.display());
            t.parse().map_err(|e| Error::file(source, format!("metadata steepest.config: {e}")))
        }
        _ => Ok(steepest::train::Tta::None),
    }
}

/// Opens the device the flags ask for and says which one it is (always, on stderr).
pub fn open_device(device: &str, adapter: Option<&str>) -> Result<AnyBackend> {
    let choice: DeviceChoice = device.parse()?;
    let backend = AnyBackend::open(choice, adapter, &mut |n| {
        if n.contains("slower than --device cpu") {
            warning!("{n}");
        } else {
            note!("{n}");
        }
    })?;
    if !quiet() {
        eprintln!("device: {}", backend.describe());
    }
    Ok(backend)
}

/// `--image-size N` (square) or `WxH`.
#[derive(Clone, Copy, Debug)]
pub struct ImageSize(pub usize, pub usize);

/// `--lr F` or `--lr auto` (a learning-rate range test picks it first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrFlag {
    Value(f32),
    Auto,
}

impl FromStr for LrFlag {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(LrFlag::Auto),
            v => v.parse::<f32>().map(LrFlag::Value).map_err(|_| {
                format!("{v:?} is not a number or auto; expected e.g. 1e-3, 0.05 or auto")
            }),
        }
    }
}

// A number, or the string "auto", in stored run configurations and config files.
impl serde::Serialize for LrFlag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LrFlag::Value(v) => s.serialize_f32(*v),
            LrFlag::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LrFlag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(LrFlag::Value(v)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.0, self.1)
    }
}

// As the flag writes it ("96x64"), in stored run configurations.
impl serde::Serialize for ImageSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for ImageSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parse = |v: &str| match v.trim().parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(n),
            _ => Err(format!(
                "{v:?} is not a size in pixels (1 to 4096); expected N or WxH, e.g. 64 or 96x64"
            )),
        };
        match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok(ImageSize(parse(w)?, parse(h)?)),
            None => parse(s).map(|n| ImageSize(n, n)),
        }
    }
}

/// A class name as the terminal should show it: control characters (escape sequences that
/// would recolour or clear the screen, newlines) shown escaped, everything else as it is.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(super::printable("\u{1b}[2Jcats"), "\\u{1b}[2Jcats");
        assert_eq!(super::printable("a\nb"), "a\\nb");
        assert_eq!(super::printable("chats é 猫"), "chats é 猫");
    }
}

//! `--download`: fetch MNIST, Fashion-MNIST or CIFAR-10 from their canonical mirrors into a cache
//! folder, each file checked against its published SHA-256 before anything uses it.
//!
//! A download streams into `NAME.partPID` next to its destination while hashing; only a file whose
//! hash matches is renamed to its real name, so an interrupted or corrupted download never leaves
//! a file that a later run could mistake for a good one.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Replaces the base URL of every download (`$STEEPEST_DOWNLOAD_MIRROR/FILE`), for air-gapped
/// mirrors and for the tests' local server.
pub const MIRROR_ENV: &str = "STEEPEST_DOWNLOAD_MIRROR";

/// One file to fetch: where from, under which name, and the SHA-256 its publisher gives.
#[derive(Clone, Debug)]
pub struct Resource {
    pub url: String,
    /// Tried in turn when `url` fails (unreachable, an HTTP error or the wrong bytes).
    pub fallbacks: Vec<String>,
    pub file: String,
    pub sha256: String,
}

impl Resource {
    /// `FILE` at `BASE/FILE` (`base` ends with a slash).
    pub fn new(base: &str, file: &str, sha256: &str) -> Self {
        Resource {
            url: format!("{base}{file}"),
            fallbacks: Vec::new(),
            file: file.into(),
            sha256: sha256.into(),
        }
    }
}

/// The files of a downloadable data set, with their published SHA-256 sums (PyTorch's and
/// TensorFlow's dataset code list the same sums).
pub fn resources(dataset: &str) -> Option<Vec<Resource>> {
    let list: &[(&str, &str)] = match dataset {
        "mnist" => &[
            (
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ],
        "fashion-mnist" => &[
            (
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ],
        "cifar10" => {
            &[(CIFAR_ARCHIVE, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")]
        }
        _ => return None,
    };
    let bases: Vec<String> = match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => vec![format!("{}/", m.trim_end_matches('/'))],
        _ => match dataset {
            // PyTorch's mirror, then TensorFlow's (LeCun's own site no longer serves them).
            "mnist" => vec![
                "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
                "https://storage.googleapis.com/cvdf-datasets/mnist/".into(),
            ],
            // Zalando's repository, then its S3 website (plain HTTP; the sums still hold).
            "fashion-mnist" => vec![
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
                    .into(),
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
            ],
            _ => vec!["https://www.cs.toronto.edu/~kriz/".into()],
        },
    };
    Some(
        list.iter()
            .map(|(file, sha)| {
                let mut r = Resource::new(&bases[0], file, sha);
                r.fallbacks = bases[1..].iter().map(|b| format!("{b}{file}")).collect();
                r
            })
            .collect(),
    )
}

/// CIFAR-10's binary archive; its `cifar-10-batches-bin/*.bin` are unpacked into the cache.
pub const CIFAR_ARCHIVE: &str = "cifar-10-binary.tar.gz";
const CIFAR_MEMBERS: [&str; 7] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
    "batches.meta.txt",
];

/// `~/.cache/steepest/NAME` (or `$XDG_CACHE_HOME/steepest/NAME`).
pub fn cache_dir(dataset: &str) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            Error::config("--download", "neither HOME nor XDG_CACHE_HOME is set; pass --data-dir")
        })?;
    Ok(base.join("steepest").join(dataset))
}

/// Makes sure `dir` holds the data set's files, downloading what is missing. Files already there
/// are re-hashed first (a few seconds at most), so a corrupted cache is caught, not trained on.
pub fn ensure(dataset: &str, dir: &Path, progress: bool) -> Result<()> {
    let list = resources(dataset).ok_or_else(|| {
        Error::config(
            "--download",
            format!(
                "{dataset} cannot be downloaded; --download knows mnist, fashion-mnist and cifar10"
            ),
        )
    })?;
    ensure_from(dataset, &list, dir, progress)
}

/// [`ensure`] from a given list of files (another mirror with its own sums, or a test's).
pub fn ensure_from(dataset: &str, list: &[Resource], dir: &Path, progress: bool) -> Result<()> {
    // The folders this call creates are removed again if nothing lands in them (offline, a
    // bad mirror): a failed download leaves nothing behind.
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        created.push(d.to_path_buf());
        missing = d.parent();
    }
    fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the download folder: {e}")))?;
    let result = fill(dataset, list, dir, progress);
    if result.is_err() {
        // Deepest first; `remove_dir` only removes an empty folder.
        for d in &created {
            if fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
    result
}

fn fill(dataset: &str, list: &[Resource], dir: &Path, progress: bool) -> Result<()> {
    if dataset == "cifar10" {
        // The archive is unpacked and then deleted; the unpacked batches stand for it.
        if CIFAR_MEMBERS.iter().all(|m| dir.join(m).is_file()) {
            return Ok(());
        }
        let archive = dir.join(&list[0].file);
        fetch(&list[0], &archive, progress)?;
        unpack_cifar(&archive, dir)?;
        fs::remove_file(&archive).map_err(|e| Error::file(&archive, e.to_string()))?;
        return Ok(());
    }
    for r in list {
        fetch(r, &dir.join(&r.file), progress)?;
    }
    Ok(())
}

/// Downloads `r` to `dest` unless a file with the right hash is already there.
pub fn fetch(r: &Resource, dest: &Path, progress: bool) -> Result<()> {
    if dest.is_file() {
        if sha256_file(dest)? == r.sha256 {
            return Ok(());
        }
        return Err(Error::file(
            dest,
            format!(
                "its SHA-256 is not the published {}; delete it and run again to download it afresh",
                r.sha256
            ),
        ));
    }
    // The process id keeps two runs downloading at once from writing into one file.
    let part = dest.with_file_name(format!(
        "{}.part{}",
        dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    // Each URL in turn; the first whose bytes have the published hash wins.
    let mut failures = Vec::new();
    for url in std::iter::once(&r.url).chain(&r.fallbacks) {
        match download_to(url, &r.file, &part, progress) {
            Ok(hash) if hash == r.sha256 => {
                return fs::rename(&part, dest).map_err(|e| {
                    Error::file(dest, format!("cannot move the finished download here: {e}"))
                });
            }
            Ok(hash) => failures.push(format!(
                "the download from {url} has SHA-256 {hash}, not the published {}",
                r.sha256
            )),
            Err(e) => failures.push(e),
        }
        let _ = fs::remove_file(&part);
    }
    Err(Error::file(dest, format!("{}; nothing was kept", failures.join("; "))))
}

/// Streams `url` into `part`, hashing as it goes; returns the hex SHA-256, or why it failed.
fn download_to(url: &str, file: &str, part: &Path, progress: bool) -> Result<String, String> {
    let net = |e: &dyn std::fmt::Display| format!("download of {url} failed: {e}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| net(&e))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let local = |e: std::io::Error| format!("{}: {e}", part.display());
    let mut out = fs::File::create(part).map_err(local)?;
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| net(&e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(local)?;
        bar.inc(n as u64);
    }
    out.sync_all().map_err(local)?;
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::file(path, e.to_string()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| Error::file(path, e.to_string()))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks the CIFAR-10 batches from the verified archive, each through a `.part` file.
fn unpack_cifar(archive: &Path, dir: &Path) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::file(archive, format!("cannot unpack: {e}"));
    let f = fs::File::open(archive).map_err(|e| bad(&e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found = 0;
    for entry in tar.entries().map_err(|e| bad(&e))? {
        let mut entry = entry.map_err(|e| bad(&e))?;
        let path = entry.path().map_err(|e| bad(&e))?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !CIFAR_MEMBERS.contains(&name) {
            continue;
        }
        let dest = dir.join(name);
        let part = dir.join(format!("{name}.part{}", std::process::id()));
        let mut out = fs::File::create(&part).map_err(|e| Error::file(&part, e.to_string()))?;
        if let Err(e) = std::io::copy(&mut entry, &mut out) {
            let _ = fs::remove_file(&part);
            return Err(bad(&e));
        }
        fs::rename(&part, &dest).map_err(|e| Error::file(&dest, e.to_string()))?;
        found += 1;
    }
    if found < CIFAR_MEMBERS.len() {
        return Err(bad(&format!(
            "found {found} of the {} expected files ({})",
            CIFAR_MEMBERS.len(),
            CIFAR_MEMBERS.join(", ")
        )));
    }
    Ok(())
}

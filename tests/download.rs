//! `--download` against a local HTTP server on 127.0.0.1 (no test reaches the internet): files
//! land only when their SHA-256 matches, a cached file is not fetched again, and a wrong hash, a
//! cut-off transfer or a missing file leaves nothing a later run could mistake for good data.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::cli::{assert_clean_error, steepest_env, temp};
use steepest::data::download::{self, Resource};
use steepest::data::{cifar, idx};

/// Serves files from `root` over HTTP/1.1, one connection at a time, until the test ends.
/// `/cut/NAME` announces NAME's full length but sends half and hangs up. Counts requests.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
}

fn serve(root: PathBuf) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
            let (cut, name) = match path.strip_prefix("cut/") {
                Some(rest) => (true, rest),
                None => (false, path),
            };
            match std::fs::read(root.join(name)) {
                Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let sent = if cut { &body[..body.len() / 2] } else { &body[..] };
                    let _ = stream.write_all(sent);
                }
                Err(_) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    Server { base, requests }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A tiny MNIST-shaped set (gzipped IDX) in `dir`; returns the file names.
fn write_mnist(dir: &Path) -> Vec<&'static str> {
    let files = [
        ("train-images-idx3-ubyte.gz", idx_file(&[20, 28, 28], &[7; 20 * 784])),
        (
            "train-labels-idx1-ubyte.gz",
            idx_file(&[20], &(0..20).map(|i| i % 10).collect::<Vec<u8>>()),
        ),
        ("t10k-images-idx3-ubyte.gz", idx_file(&[10, 28, 28], &[9; 10 * 784])),
        ("t10k-labels-idx1-ubyte.gz", idx_file(&[10], &(0..10).collect::<Vec<u8>>())),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), gz(bytes)).unwrap();
    }
    files.iter().map(|(n, _)| *n).collect()
}

fn manifest(server: &Server, root: &Path, names: &[&str]) -> Vec<Resource> {
    names
        .iter()
        .map(|n| Resource::new(&server.base, n, &download::sha256_file(&root.join(n)).unwrap()))
        .collect()
}

/// Nothing but `allowed` in `dir`: no `.part` leftovers, no unverified files.
fn assert_only(dir: &Path, allowed: &[&str]) {
    if !dir.exists() {
        return;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(allowed.contains(&name.as_str()), "{name} was left in {}", dir.display());
    }
}

#[test]
fn verified_files_land_once_and_load() {
    let root = temp("dl-root");
    let names = write_mnist(&root);
    let server = serve(root.clone());
    let list = manifest(&server, &root, &names);
    let cache_dir = temp("dl-cache");
    let cache = cache_dir.join("mnist");
    download::ensure_from("mnist", &list, &cache, false).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    assert_only(&cache, &names);
    let data = idx::load_dir(&cache, "mnist", None).unwrap();
    assert_eq!((data.train.len, data.test.len), (20, 10));
    // Present and verified: not fetched again.
    download::ensure_from("mnist", &list, &cache, false).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    // A cached file that was changed is caught, not trained on.
    std::fs::write(cache.join(names[1]), b"tampered").unwrap();
    let e = download::ensure_from("mnist", &list, &cache, false).unwrap_err().to_string();
    assert!(e.contains(names[1]) && e.contains("SHA-256") && e.contains("delete it"), "{e}");
}

#[test]
fn a_bad_hash_a_cut_transfer_or_a_missing_file_leaves_nothing() {
    let root = temp("dl-bad-root");
    let names = write_mnist(&root);
    let server = serve(root.clone());
    let good = manifest(&server, &root, &names);
    let cache = temp("dl-bad-cache");

    let mut wrong = good.clone();
    wrong[0].sha256 = "0".repeat(64);
    let e = download::ensure_from("mnist", &wrong, &cache, false).unwrap_err().to_string();
    assert!(
        e.contains("SHA-256") && e.contains(&"0".repeat(64)) && e.contains("nothing was kept"),
        "{e}"
    );
    assert_only(&cache, &[]);

    let mut cut = good.clone();
    cut[0].url = format!("{}cut/{}", server.base, names[0]);
    let e = download::ensure_from("mnist", &cut, &cache, false).unwrap_err().to_string();
    assert!(e.contains("cut/") && e.contains("nothing was kept"), "{e}");
    assert_only(&cache, &[]);

    let mut missing = good.clone();
    missing[0].url = format!("{}no-such-file.gz", server.base);
    let e = download::ensure_from("mnist", &missing, &cache, false).unwrap_err().to_string();
    assert!(e.contains("no-such-file.gz") && e.contains("404"), "{e}");
    assert_only(&cache, &[]);
}

#[test]
fn a_failing_mirror_falls_back_to_the_next() {
    let root = temp("dl-fallback-root");
    let names = write_mnist(&root);
    let server = serve(root.clone());
    let mut list = manifest(&server, &root, &names);
    for r in &mut list {
        // A missing file first, then a cut-off one, then the real thing.
        r.fallbacks = vec![format!("{}cut/{}", server.base, r.file), r.url.clone()];
        r.url = format!("{}gone/{}", server.base, r.file);
    }
    let cache = temp("dl-fallback-cache");
    download::ensure_from("mnist", &list, &cache, false).unwrap();
    assert_only(&cache, &names);
    assert_eq!(server.requests.load(Ordering::SeqCst), 12, "three tries per file");
    // When every URL fails, each failure is reported.
    let mut dead = list.clone();
    dead[0].fallbacks = vec![format!("{}cut/{}", server.base, names[0])];
    let fresh = temp("dl-fallback-dead");
    let e = download::ensure_from("mnist", &dead, &fresh, false).unwrap_err().to_string();
    assert!(e.contains("gone/") && e.contains("404") && e.contains("cut/"), "{e}");
    assert_only(&fresh, &[]);
}

#[test]
fn cifar_archive_is_verified_unpacked_and_removed() {
    let root = temp("dl-cifar-root");
    // The official archive's layout: cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin.
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), bytes).unwrap();
    };
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(label * 20, 3072));
        r
    };
    for b in 1..=5 {
        add(&format!("data_batch_{b}.bin"), &[record(b), record(b + 1)].concat());
    }
    add("test_batch.bin", &record(0));
    add("batches.meta.txt", cifar::CLASS_NAMES.join("\n").as_bytes());
    add("readme.html", b"<html></html>");
    let archive = gz(&tar.into_inner().unwrap());
    std::fs::write(root.join(download::CIFAR_ARCHIVE), &archive).unwrap();
    let server = serve(root.clone());
    let list = manifest(&server, &root, &[download::CIFAR_ARCHIVE]);
    let cache = temp("dl-cifar-cache");
    download::ensure_from("cifar10", &list, &cache, false).unwrap();
    let mut members: Vec<String> = (1..=5).map(|b| format!("data_batch_{b}.bin")).collect();
    members.extend(["test_batch.bin".into(), "batches.meta.txt".into()]);
    let allowed: Vec<&str> = members.iter().map(|s| s.as_str()).collect();
    assert_only(&cache, &allowed);
    let data = cifar::load_dir(&cache).unwrap();
    assert_eq!((data.train.len, data.test.len), (10, 1));
    assert_eq!(data.train.labels[..4], [1, 2, 2, 3]);
    // Unpacked batches stand for the archive: no second request.
    download::ensure_from("cifar10", &list, &cache, false).unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

/// Through the CLI, with the built-in published sums: the shared MNIST files are re-gzipped
/// copies (same pixels, other .gz bytes), so every sum must fail and nothing may be kept.
#[test]
fn cli_download_checks_the_published_sums() {
    let root = temp("dl-cli-root");
    write_mnist(&root);
    let server = serve(root.clone());
    let cache = temp("dl-cli-cache");
    let o = steepest_env(
        &[
            "train",
            "--dataset",
            "mnist",
            "--download",
            "--data-dir",
            cache.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &[(download::MIRROR_ENV, &server.base)],
    );
    assert_clean_error(
        &o,
        &[
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "nothing was kept",
        ],
    );
    assert_only(&cache, &[]);
    // Offline (nothing answers), into folders that do not exist yet: none is left behind.
    let fresh_dir = temp("dl-cli-offline");
    let fresh = fresh_dir.join("new").join("mnist");
    let o = steepest_env(
        &[
            "train",
            "--dataset",
            "mnist",
            "--download",
            "--data-dir",
            fresh.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &[(download::MIRROR_ENV, "http://127.0.0.1:9")],
    );
    assert!(!o.status.success());
    assert!(!fresh.parent().unwrap().exists(), "the folders the download made are gone");
    // Without --download and without the files, the error says how to get them.
    let empty = temp("dl-cli-empty");
    let o = steepest_env(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            empty.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &[],
    );
    assert_clean_error(&o, &["train-images-idx3-ubyte"]);
    let o = steepest_env(&["train", "--dataset", "synthetic", "--download"], &[]);
    assert_clean_error(&o, &["--download", "synthetic cannot be downloaded"]);
}

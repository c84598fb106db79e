//! Running the real `steepest` binary from tests.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn steepest(args: &[&str]) -> Output {
    steepest_env(args, &[])
}

pub fn steepest_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steepest"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run steepest")
}

/// A fresh folder under the system's temporary folder, removed when the test is done with it
/// (kept when the test fails, to look at).
pub fn temp(name: &str) -> TempDir {
    TempDir::new(&format!("steepest-test-{}-{name}", std::process::id()))
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Fails unless the run failed cleanly with every `needles` in its error output.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let (out, err) = text(o);
    assert!(!o.status.success(), "expected failure; stdout: {out}\nstderr: {err}");
    assert!(!err.contains("panicked"), "panic instead of an error: {err}");
    for n in needles {
        assert!(err.contains(n), "error output lacks {n:?}: {err}");
    }
}

/// Runs `steepest args`, fails the test unless it succeeded, and returns (stdout, stderr).
pub fn run_ok(args: &[&str]) -> (String, String) {
    let o = steepest(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "steepest {args:?} failed\nstdout: {out}\nstderr: {err}");
    (out, err)
}

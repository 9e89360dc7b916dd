//! Scratch directories: [`TempDir`], removed on drop unless the test is failing (so its files
//! can be looked at), and [`scratch_dir`] for a daemon's own working directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory `xrayd-<tag>-<pid>-<n>` under the system's temp dir.
fn fresh(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("xrayd-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A fresh, empty scratch directory (the caller removes it; the daemon runner does on drop).
pub fn scratch_dir() -> PathBuf {
    fresh("test")
}

/// A scratch directory, removed on drop (kept when the test fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(fresh(tag))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The path of `name` in the directory, as a string (the file need not exist).
    pub fn file(&self, name: &str) -> String {
        self.join(name).to_string_lossy().into_owned()
    }

    /// Writes `text` to `name`; returns its path as a string.
    pub fn write(&self, name: &str, text: &str) -> String {
        self.create(name, text).to_string_lossy().into_owned()
    }

    /// Writes `content` to `name`; returns its path.
    pub fn create(&self, name: &str, content: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, content).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

//! Helpers for the agent's unit tests: a temporary directory, and a [`Jail`]
//! (a temporary working directory and environment, one test at a time).
//!
//! They replace tempfile and figment's `test` feature, which as
//! dev-dependencies turned on features of crates the agent itself uses, so
//! that the agent built with the workspace differed from the agent built
//! alone (see agent/Cargo.toml and tests/tests/build_features.rs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vnt-agent-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier test process that had the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test that changes the working directory and the environment: it runs
/// alone among jailed tests, in a fresh directory, and whatever it changed is
/// restored when it ends, also when it panics. The API is the part of
/// figment's `Jail` the config tests used.
pub(crate) struct Jail {
    dir: TempDir,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    _lock: MutexGuard<'static, ()>,
}

impl Jail {
    /// Runs `f` in a jail; an error fails the test.
    pub(crate) fn expect_with(f: impl FnOnce(&mut Jail) -> std::io::Result<()>) {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let dir = TempDir::new();
        let cwd = std::env::current_dir().expect("current directory");
        std::env::set_current_dir(dir.path()).expect("enter the jail directory");
        let mut jail = Jail {
            dir,
            cwd,
            env: std::env::vars_os().collect(),
            _lock: lock,
        };
        if let Err(e) = f(&mut jail) {
            panic!("jailed test failed: {e}");
        }
    }

    /// Writes `name` (relative to the jail directory) and returns its path.
    pub(crate) fn create_file(&self, name: &str, contents: &str) -> std::io::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }

    /// Sets an environment variable until the jail ends.
    pub(crate) fn set_env(&mut self, key: &str, value: impl std::fmt::Display) {
        std::env::set_var(key, value.to_string());
    }

    /// Removes every environment variable until the jail ends.
    pub(crate) fn clear_env(&mut self) {
        for (key, _) in std::env::vars_os() {
            std::env::remove_var(key);
        }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.cwd);
        for (key, _) in std::env::vars_os() {
            if !self.env.iter().any(|(k, _)| *k == key) {
                std::env::remove_var(key);
            }
        }
        for (key, value) in &self.env {
            std::env::set_var(key, value);
        }
    }
}

//! Finding, opening and talking to plugin libraries. The only module that
//! uses libloading; all of its `unsafe` is in `ffi.rs`.
//!
//! Search path for a plugin named `NAME` (file `libvnt_plugin_NAME.so`, with
//! `-` in the name written `_`), first match wins:
//! 1. `--plugin-dir` / `plugin_dirs` entries, in order;
//! 2. `VNT_PLUGIN_PATH` (colon-separated);
//! 3. the agent executable's directory, then `<exe dir>/../lib/vnt/plugins`;
//! 4. `/usr/local/lib/vnt/plugins`, `/usr/lib/vnt/plugins`.
//!
//! A plugin given as a path (it contains `/`) is opened as is.

mod ffi;
pub mod trust;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use thiserror::Error;
use vnt_plugin_api::declare::{DeclaredField, DeclaredMetric};
use vnt_plugin_api::{FieldKind, HookKind, MetricKind, Observation};

pub use ffi::{DecodeOutcome, MAX_OBSERVATIONS_PER_RECORD};
pub use trust::Trust;

const PREFIX: &str = "libvnt_plugin_";
const SUFFIX: &str = ".so";

/// Plugin loading failures.
#[derive(Debug, Error)]
pub enum PluginError {
    /// No file for this name on the search path.
    #[error("unknown plugin `{name}`; available: {available}\n  searched: {searched}")]
    Unknown {
        /// Requested name.
        name: String,
        /// Plugins found, comma-separated, or "none".
        available: String,
        /// Directories searched.
        searched: String,
    },
    /// A path that does not exist.
    #[error("plugin file not found: {path}")]
    Missing {
        /// Path given.
        path: String,
    },
    /// dlopen failed.
    #[error("cannot open plugin {path}: {reason}")]
    Open {
        /// Path.
        path: String,
        /// dlerror text.
        reason: String,
    },
    /// The library has no entry symbol.
    #[error("{path} is not a vnt plugin: it does not export `{symbol}`")]
    NotAPlugin {
        /// Path.
        path: String,
        /// Symbol looked for.
        symbol: &'static str,
    },
    /// Incompatible ABI.
    #[error("refusing plugin {path}: {reason}")]
    Abi {
        /// Path.
        path: String,
        /// Both versions.
        reason: String,
    },
    /// The plugin's table (or its entry point) cannot be used as it is: a
    /// panic, a null pointer with a length, an absurd length or count, a
    /// string that is not UTF-8, a table smaller than ABI 1.0's.
    #[error("refusing plugin {}{path}: `{field}` {reason}", plugin.as_ref().map(|n| format!("`{n}` from ")).unwrap_or_default())]
    Invalid {
        /// Path.
        path: String,
        /// Plugin name, when it could be read.
        plugin: Option<String>,
        /// The field at fault (`probes[0].alternatives_len`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file, a symlink on the way to it, or a directory holding one of
    /// them could be written by someone other than root or the agent's user.
    #[error("refusing plugin file {path}: {reason}. A plugin runs inside the agent (uid {euid}): whoever can write it can take over the host. Fix it with {fix}, or override with {override_}", override_ = trust::OVERRIDE)]
    Unsafe {
        /// The path as given or resolved.
        path: String,
        /// Which path and what is wrong with it.
        reason: String,
        /// A command that makes it safe.
        fix: String,
        /// The agent's effective user.
        euid: u32,
    },
    /// `create` failed.
    #[error("plugin `{name}` failed to start: {reason}")]
    Create {
        /// Plugin name.
        name: String,
        /// Its message.
        reason: String,
    },
    /// Config could not be serialised for the plugin.
    #[error("plugin `{name}`: {reason}")]
    Config {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl PluginError {
    /// A fault of the plugin library itself (it cannot be opened, speaks
    /// another ABI, or hands over a table that cannot be used): the agent
    /// disables that plugin and goes on with the others. The other errors are
    /// the operator's to fix (a name, a path, a file's permissions, the
    /// plugin's configuration) and stop the agent before it touches the kernel.
    pub fn disables_only_the_plugin(&self) -> bool {
        matches!(
            self,
            PluginError::Open { .. }
                | PluginError::NotAPlugin { .. }
                | PluginError::Abi { .. }
                | PluginError::Invalid { .. }
        )
    }
}

/// The plugin name a library file stands for, before it is opened:
/// `/x/libvnt_plugin_xen_sched.so` -> `xen-sched`; other files by their stem.
pub fn name_of(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file.strip_suffix(SUFFIX).unwrap_or(&file);
    stem.strip_prefix(PREFIX)
        .or_else(|| stem.strip_prefix("libvnt_fixture_"))
        .unwrap_or(stem)
        .replace('_', "-")
}

/// One alternative of a probe, as the plugin declared it.
#[derive(Debug, Clone)]
pub struct ProbeAltInfo {
    /// Known kind, or `None` for a kind newer than this agent.
    pub kind: Option<HookKind>,
    /// Raw kind value.
    pub raw_kind: u32,
    /// Program name.
    pub program: String,
    /// Attach target.
    pub target: String,
}

/// A probe as the plugin declared it.
#[derive(Debug, Clone)]
pub struct ProbeInfo {
    /// Name.
    pub name: String,
    /// Must attach.
    pub required: bool,
    /// Attached only when asked for by name (`--probes`).
    pub opt_in: bool,
    /// In preference order.
    pub alternatives: Vec<ProbeAltInfo>,
}

/// A hook id as the plugin declared it.
#[derive(Debug, Clone)]
pub struct HookInfo {
    /// Id in records.
    pub id: u16,
    /// Ends the journey.
    pub terminal: bool,
    /// Kernel name.
    pub name: String,
    /// Short label.
    pub label: String,
}

/// A field the plugin's observations carry (ABI 1.3); its id is its index.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    /// Name within the plugin (`state`).
    pub name: String,
    /// Value type.
    pub kind: FieldKind,
    /// UCUM unit, or "".
    pub unit: String,
    /// Semantic-convention key, or "".
    pub otel_key: String,
    /// One line.
    pub description: String,
    /// May label a metric.
    pub low_cardinality: bool,
    /// The attribute key in every output: `otel_key`, else
    /// `vnt.<plugin>.<name>`.
    pub key: Arc<str>,
}

/// A metric the plugin records (ABI 1.3); its id is its index.
#[derive(Debug, Clone)]
pub struct MetricInfo {
    /// Name within the plugin; exported as `vnt.<plugin>.<name>`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// UCUM unit, or "".
    pub unit: String,
    /// One line.
    pub description: String,
    /// Label field ids.
    pub labels: Vec<u16>,
    /// Histogram bounds (empty: the host's).
    pub buckets: Vec<f64>,
}

/// Everything static a plugin declares, copied out of its library.
#[derive(Debug, Clone)]
pub struct PluginMeta {
    /// ABI major it was built for.
    pub abi_major: u16,
    /// ABI minor it was built for.
    pub abi_minor: u16,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// One line.
    pub description: String,
    /// A test fixture, not a product (listed only with `--all`).
    pub test_fixture: bool,
    /// eBPF ELF object.
    pub bpf_object: Vec<u8>,
    /// Probes.
    pub probes: Vec<ProbeInfo>,
    /// Hooks.
    pub hooks: Vec<HookInfo>,
    /// Declared fields (ABI 1.3; empty before).
    pub fields: Vec<FieldInfo>,
    /// Declared metrics (ABI 1.3; empty before).
    pub metrics: Vec<MetricInfo>,
    /// Timer period in milliseconds; 0 none.
    pub tick_interval_ms: u32,
    /// Emits observations joined by TCP sequence number (ABI 1.3).
    pub joins_by_tcp_seq: bool,
}

impl PluginMeta {
    /// Check the declared fields and metrics (names, references, bounds)
    /// and resolve each field's attribute key.
    fn check_declarations(&mut self) -> Result<(), String> {
        let fields: Vec<DeclaredField<'_>> = self
            .fields
            .iter()
            .map(|f| DeclaredField {
                name: &f.name,
                otel_key: &f.otel_key,
                low_cardinality: f.low_cardinality,
            })
            .collect();
        let metrics: Vec<DeclaredMetric<'_>> = self
            .metrics
            .iter()
            .map(|m| DeclaredMetric {
                name: &m.name,
                labels: &m.labels,
                buckets: &m.buckets,
            })
            .collect();
        vnt_plugin_api::declare::check(&fields, &metrics)?;
        let plugin = self.name.replace('-', "_");
        for f in &mut self.fields {
            f.key = if f.otel_key.is_empty() {
                format!("vnt.{plugin}.{}", f.name).into()
            } else {
                f.otel_key.as_str().into()
            };
        }
        Ok(())
    }

    /// Whether an observation's values and metric id fit the declarations;
    /// the error says what does not.
    pub fn check_observation(&self, o: &Observation) -> Result<(), String> {
        vnt_plugin_api::declare::check_observation(
            o,
            |id| {
                self.fields
                    .get(usize::from(id))
                    .map(|f| (f.name.as_str(), f.kind))
            },
            self.metrics.len(),
        )
    }
    /// The hook with this id.
    pub fn hook(&self, id: u16) -> Option<&HookInfo> {
        self.hooks.iter().find(|h| h.id == id)
    }
}

/// A loaded plugin: its library, metadata and one instance.
pub struct LoadedPlugin {
    // Field order matters: the instance is destroyed before the library unloads.
    instance: ffi::Instance,
    /// Static description.
    pub meta: PluginMeta,
    /// Where it was loaded from.
    pub path: PathBuf,
    _lib: ffi::PluginLibrary,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.meta.name)
            .field("path", &self.path)
            .finish()
    }
}

impl LoadedPlugin {
    /// Decode one ring-buffer record. Observations whose values or metric
    /// do not fit the declarations are dropped and counted as malformed.
    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Observation>) -> (DecodeOutcome, u64) {
        let start = out.len();
        let (outcome, malformed) = self.instance.decode(record, out);
        (outcome, malformed + self.keep_declared(out, start))
    }

    /// Run the plugin's timer callback, if it has one.
    pub fn tick(&mut self, out: &mut Vec<Observation>) -> Option<(DecodeOutcome, u64)> {
        let start = out.len();
        let (outcome, malformed) = self.instance.tick(out)?;
        Some((outcome, malformed + self.keep_declared(out, start)))
    }

    fn keep_declared(&self, out: &mut Vec<Observation>, start: usize) -> u64 {
        // The common case, checked inline: nothing to check.
        let plain = |o: &Observation| match o {
            Observation::Packet(p) => p.values.is_empty(),
            Observation::Metric(_) => false,
            _ => true,
        };
        if out[start..].iter().all(plain) {
            return 0;
        }
        let before = out.len();
        let mut first_error = None;
        let mut i = start;
        while i < out.len() {
            match self.meta.check_observation(&out[i]) {
                Ok(()) => i += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                    out.remove(i);
                }
            }
        }
        if let Some(e) = first_error {
            tracing::debug!(plugin = %self.meta.name, error = %e, "observation does not fit the plugin's declarations (counted as malformed)");
        }
        (before - out.len()) as u64
    }
}

/// The ordered list of directories searched for plugins.
pub fn search_path(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    if let Ok(p) = std::env::var("VNT_PLUGIN_PATH") {
        dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("../lib/vnt/plugins"));
        dirs.insert(dirs.len() - 1, exe_dir);
    }
    dirs.push("/usr/local/lib/vnt/plugins".into());
    dirs.push("/usr/lib/vnt/plugins".into());
    dirs
}

/// File name of a plugin: `veth` -> `libvnt_plugin_veth.so`.
pub fn file_name(name: &str) -> String {
    format!("{PREFIX}{}{SUFFIX}", name.replace('-', "_"))
}

/// Plugins available on the search path: name -> first path found.
pub fn discover(dirs: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let Some(f) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if let Some(name) = f.strip_prefix(PREFIX).and_then(|n| n.strip_suffix(SUFFIX)) {
                found.entry(name.replace('_', "-")).or_insert(path);
            }
        }
    }
    found
}

/// Resolve a `--plugins` entry to a file.
pub fn resolve(entry: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if entry.contains('/') {
        let p = PathBuf::from(entry);
        return if p.exists() {
            Ok(p)
        } else {
            Err(PluginError::Missing { path: entry.into() })
        };
    }
    let file = file_name(entry);
    for dir in dirs {
        let p = dir.join(&file);
        if p.exists() {
            return Ok(p);
        }
    }
    let available = discover(dirs);
    Err(PluginError::Unknown {
        name: entry.into(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.keys().cloned().collect::<Vec<_>>().join(", ")
        },
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// Open a plugin library and read its description (file trust and ABI checked).
pub fn inspect(path: &Path, trust: Trust) -> Result<PluginMeta, PluginError> {
    trust::check(path, trust)?;
    ffi::open(path).map(|(_, meta)| meta)
}

/// Check the file, open it, check the table and instantiate the plugin.
pub fn load(
    path: &Path,
    config: &serde_json::Value,
    trust: Trust,
) -> Result<LoadedPlugin, PluginError> {
    trust::check(path, trust)?;
    let (lib, meta) = ffi::open(path)?;
    let json = serde_json::to_vec(config).map_err(|e| PluginError::Config {
        name: meta.name.clone(),
        reason: e.to_string(),
    })?;
    let instance = lib
        .create(
            &meta.name,
            &json,
            meta.fields.iter().map(|f| f.low_cardinality).collect(),
        )
        .map_err(|reason| PluginError::Create {
            name: meta.name.clone(),
            reason,
        })?;
    Ok(LoadedPlugin {
        instance,
        meta,
        path: path.to_path_buf(),
        _lib: lib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_files_and_back() {
        assert_eq!(file_name("veth"), "libvnt_plugin_veth.so");
        assert_eq!(file_name("xen-sched"), "libvnt_plugin_xen_sched.so");
        let dir = crate::testing::TempDir::new();
        std::fs::write(dir.path().join("libvnt_plugin_xen_sched.so"), b"").unwrap();
        std::fs::write(dir.path().join("libother.so"), b"").unwrap();
        let found = discover(&[dir.path().to_path_buf()]);
        assert_eq!(found.keys().collect::<Vec<_>>(), vec!["xen-sched"]);
    }

    #[test]
    fn unknown_plugin_lists_the_available_ones() {
        let dir = crate::testing::TempDir::new();
        std::fs::write(dir.path().join("libvnt_plugin_veth.so"), b"").unwrap();
        let err = resolve("ovs", &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown plugin `ovs`"), "{err}");
        assert!(err.contains("available: veth"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn missing_path_is_named() {
        let err = resolve("/nonexistent/libvnt_plugin_x.so", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "plugin file not found: /nonexistent/libvnt_plugin_x.so"
        );
    }

    #[test]
    fn a_non_library_is_refused_cleanly() {
        let dir = crate::testing::TempDir::new();
        let p = dir.path().join("libvnt_plugin_junk.so");
        std::fs::write(&p, b"not an ELF").unwrap();
        let err = inspect(&p, Trust::AllowUnsafe).unwrap_err().to_string();
        assert!(err.starts_with("cannot open plugin"), "{err}");
    }
}

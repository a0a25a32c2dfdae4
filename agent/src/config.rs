//! Configuration: built-in defaults < TOML file < `VNT_*` environment <
//! command-line flags, merged with figment, then validated into [`Config`].
//!
//! Every error names the key and where its value came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::probes::filter::{FilterError, FilterSpec};

/// Top-level keys read from `VNT_*` variables (`VNT_SAMPLE=1/10`,
/// `VNT_JOURNEY__IDLE_TIMEOUT_MS=50`). Other `VNT_*` variables are not config.
const ENV_KEYS: &[&str] = &[
    "plugins",
    "plugin_dirs",
    "filter",
    "sample",
    "output",
    "duration",
    "ready_file",
    "btf",
    "journey",
    "ringbuf",
];

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Human-readable, one block per journey.
    Pretty,
    /// JSON lines, one object per journey (docs/output.md).
    Json,
}

/// A list given either as a TOML array or a comma-separated string
/// (`VNT_PLUGINS=veth,ovs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListOrString {
    /// `["a", "b"]`
    List(Vec<String>),
    /// `"a,b"`
    Str(String),
}

impl ListOrString {
    fn items(&self, sep: char) -> Vec<String> {
        match self {
            ListOrString::List(v) => v.clone(),
            ListOrString::Str(s) => s
                .split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// `[journey]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawJourney {
    /// A journey ends when no hook has seen its packet for this long.
    pub idle_timeout_ms: u64,
    /// At most this many journeys are followed at once; the oldest is ended early beyond it.
    pub max_in_flight: usize,
}

/// `[ringbuf]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRingbuf {
    /// Size of each plugin's ring buffer (a power of two, multiple of the page size).
    pub bytes: u32,
}

/// The configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Plugins to load, by name or path.
    pub plugins: ListOrString,
    /// Extra plugin directories, searched first.
    pub plugin_dirs: ListOrString,
    /// Filter expression (see `--help`).
    pub filter: String,
    /// Sampling: `1/N`, `N`, or `all`.
    pub sample: String,
    /// `pretty` or `json`.
    pub output: OutputFormat,
    /// Seconds to run; 0 runs until SIGINT/SIGTERM.
    pub duration: u64,
    /// File written once every probe is attached.
    pub ready_file: Option<PathBuf>,
    /// Kernel BTF when /sys/kernel/btf/vmlinux is absent.
    pub btf: Option<PathBuf>,
    /// Journey builder settings.
    pub journey: RawJourney,
    /// Ring buffer settings.
    pub ringbuf: RawRingbuf,
    /// Per-plugin tables, passed to each plugin as JSON.
    pub plugin: BTreeMap<String, serde_json::Value>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            plugins: ListOrString::List(vec![]),
            plugin_dirs: ListOrString::List(vec![]),
            filter: String::new(),
            sample: "1/1".into(),
            output: OutputFormat::Pretty,
            duration: 0,
            ready_file: None,
            btf: None,
            journey: RawJourney {
                idle_timeout_ms: 100,
                max_in_flight: 65536,
            },
            ringbuf: RawRingbuf {
                bytes: 4 * 1024 * 1024,
            },
            plugin: BTreeMap::new(),
        }
    }
}

/// Flags given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagLayer {
    /// `--plugins`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugins: Option<String>,
    /// `--plugin-dir` (repeatable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_dirs: Option<Vec<String>>,
    /// `--filter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `--sample`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
    /// `--output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputFormat>,
    /// `--duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// `--ready-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<PathBuf>,
    /// `--btf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btf: Option<PathBuf>,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plugins by name or path, in the order given.
    pub plugins: Vec<String>,
    /// Extra plugin directories.
    pub plugin_dirs: Vec<PathBuf>,
    /// The filter.
    pub filter: FilterSpec,
    /// The filter as written (for logs).
    pub filter_text: String,
    /// Keep one packet in `sample_n`.
    pub sample_n: u32,
    /// Output format.
    pub output: OutputFormat,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Ready file.
    pub ready_file: Option<PathBuf>,
    /// BTF path override.
    pub btf: Option<PathBuf>,
    /// Journey idle timeout.
    pub idle_timeout: Duration,
    /// Journeys followed at once.
    pub max_in_flight: usize,
    /// Ring buffer bytes per plugin.
    pub ringbuf_bytes: u32,
    /// Per-plugin config.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    File {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Parsing or type error, as figment reports it (it names key and source).
    #[error("invalid configuration: {0}")]
    Figment(String),
    /// A value that parsed but is not allowed.
    #[error("invalid value for `{key}`{origin}: {message}")]
    Invalid {
        /// Key path (`journey.idle_timeout_ms`).
        key: String,
        /// " (from <source>)" or "".
        origin: String,
        /// What is wrong.
        message: String,
    },
}

fn figment_error(e: figment::Error) -> ConfigError {
    // figment lists every error; keep them all, one per line.
    let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
    ConfigError::Figment(msgs.join("; "))
}

/// Build the layered figment. `file` is `--config`.
pub fn figment(file: Option<&Path>, flags: &FlagLayer) -> Result<Figment, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = file {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                source,
            });
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    let env = Env::prefixed("VNT_")
        .split("__")
        .filter(|k| {
            let top = k.as_str().split('.').next().unwrap_or_default();
            ENV_KEYS.iter().any(|e| e.eq_ignore_ascii_case(top))
        });
    Ok(fig.merge(env).merge(Serialized::defaults(flags.clone())))
}

fn invalid(fig: &Figment, key: &str, message: impl Into<String>) -> ConfigError {
    let origin = fig
        .find_metadata(key)
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    ConfigError::Invalid {
        key: key.into(),
        origin,
        message: message.into(),
    }
}

/// Parse `1/N`, `N` or `all`.
pub fn parse_sample(s: &str) -> Result<u32, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(1);
    }
    let n = match s.split_once('/') {
        Some(("1", n)) => n,
        Some(_) => {
            return Err(format!(
                "`{s}`: write the rate as 1/N (keep one packet in N)"
            ))
        }
        None => s,
    };
    match n.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{s}`: N must be a whole number >= 1 (1/1 keeps every packet)"
        )),
    }
}

impl Config {
    /// Extract and validate.
    pub fn from_figment(fig: &Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = fig.extract().map_err(figment_error)?;
        let filter = FilterSpec::parse(&raw.filter)
            .map_err(|e: FilterError| invalid(fig, "filter", e.to_string()))?;
        let sample_n = parse_sample(&raw.sample).map_err(|m| invalid(fig, "sample", m))?;
        if raw.journey.idle_timeout_ms == 0 || raw.journey.idle_timeout_ms > 60_000 {
            return Err(invalid(
                fig,
                "journey.idle_timeout_ms",
                format!("{} is outside 1..=60000", raw.journey.idle_timeout_ms),
            ));
        }
        if raw.journey.max_in_flight == 0 {
            return Err(invalid(fig, "journey.max_in_flight", "must be at least 1"));
        }
        let rb = raw.ringbuf.bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(invalid(
                fig,
                "ringbuf.bytes",
                format!("{rb} is not a power of two >= 4096"),
            ));
        }
        let plugins = raw.plugins.items(',');
        Ok(Config {
            plugins,
            plugin_dirs: raw
                .plugin_dirs
                .items(':')
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            filter,
            filter_text: raw.filter,
            sample_n,
            output: raw.output,
            duration: (raw.duration > 0).then(|| Duration::from_secs(raw.duration)),
            ready_file: raw.ready_file,
            btf: raw.btf,
            idle_timeout: Duration::from_millis(raw.journey.idle_timeout_ms),
            max_in_flight: raw.journey.max_in_flight,
            ringbuf_bytes: rb,
            plugin_config: raw.plugin,
        })
    }
}

#[cfg(test)]
// figment's Jail closures return its large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load(file: Option<&str>, flags: FlagLayer) -> Result<Config, ConfigError> {
        let fig = figment(file.map(Path::new), &flags)?;
        Config::from_figment(&fig)
    }

    #[test]
    fn defaults_are_sensible() {
        Jail::expect_with(|_| {
            let c = load(None, FlagLayer::default()).unwrap();
            assert_eq!(c.sample_n, 1);
            assert_eq!(c.output, OutputFormat::Pretty);
            assert_eq!(c.idle_timeout, Duration::from_millis(100));
            assert!(c.duration.is_none());
            Ok(())
        });
    }

    #[test]
    fn layers_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "vnt.toml",
                "plugins = [\"veth\"]\nsample = \"1/10\"\nfilter = \"port 1\"\n[journey]\nidle_timeout_ms = 50\n",
            )?;
            let c = load(Some("vnt.toml"), FlagLayer::default()).unwrap();
            assert_eq!(
                (c.sample_n, c.plugins.clone()),
                (10, vec!["veth".to_string()])
            );
            assert_eq!(c.idle_timeout, Duration::from_millis(50));

            jail.set_env("VNT_SAMPLE", "1/20");
            jail.set_env("VNT_PLUGINS", "veth,ovs");
            jail.set_env("VNT_JOURNEY__IDLE_TIMEOUT_MS", "70");
            jail.set_env("VNT_AGENT_BIN", "/not/config"); // ignored: not a config key
            let c = load(Some("vnt.toml"), FlagLayer::default()).unwrap();
            assert_eq!(c.sample_n, 20);
            assert_eq!(c.plugins, vec!["veth", "ovs"]);
            assert_eq!(c.idle_timeout, Duration::from_millis(70));

            let flags = FlagLayer {
                sample: Some("1/30".into()),
                plugins: Some("veth".into()),
                ..Default::default()
            };
            let c = load(Some("vnt.toml"), flags).unwrap();
            assert_eq!(c.sample_n, 30);
            assert_eq!(c.plugins, vec!["veth"]);
            assert_eq!(c.filter_text, "port 1");
            Ok(())
        });
    }

    #[test]
    fn type_error_names_key_and_file() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[journey]\nidle_timeout_ms = \"soon\"\n")?;
            let err = load(Some("bad.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("journey.idle_timeout_ms"), "{err}");
            assert!(err.contains("bad.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "sampel = \"1/2\"\n")?;
            let err = load(Some("typo.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("sampel"), "{err}");
            assert!(err.contains("typo.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_value_names_key_and_source() {
        Jail::expect_with(|jail| {
            jail.create_file("v.toml", "sample = \"1/0\"\n")?;
            let err = load(Some("v.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("`sample`"), "{err}");
            assert!(err.contains("v.toml"), "{err}");
            jail.create_file("f.toml", "filter = \"prot 1\"\n")?;
            let err = load(Some("f.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("`filter`") && err.contains("prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn toml_syntax_error_names_file() {
        Jail::expect_with(|jail| {
            jail.create_file("syntax.toml", "sample = \n")?;
            let err = load(Some("syntax.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("syntax.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        Jail::expect_with(|_| {
            let err = load(Some("nope.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("nope.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn sample_forms() {
        assert_eq!(parse_sample("1/1"), Ok(1));
        assert_eq!(parse_sample("1/100"), Ok(100));
        assert_eq!(parse_sample("100"), Ok(100));
        assert_eq!(parse_sample("all"), Ok(1));
        assert!(parse_sample("2/3").is_err());
        assert!(parse_sample("1/0").is_err());
        assert!(parse_sample("x").is_err());
    }
}

//! Configuration: built-in defaults < TOML file < `VNT_*` environment <
//! command-line flags, merged with figment, then validated into [`Config`].
//!
//! Every error names the key and where its value came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::probes::filter::{FilterError, FilterSpec};
use crate::probes::id_key::{IdKey, DEFAULT_ID_KEY_HEX};
use crate::probes::tunnels::{
    KernelTunnels, Tunnels, DEFAULT_IP_IN_UDP_PORTS, DEFAULT_VXLAN_PORTS,
};
use crate::probes::OptIn;

/// Top-level keys read from `VNT_*` variables (`VNT_SAMPLE=1/10`,
/// `VNT_JOURNEY__IDLE_TIMEOUT_MS=50`). Other `VNT_*` variables are not config.
const ENV_KEYS: &[&str] = &[
    "plugins",
    "plugin_dirs",
    "allow_unsafe_plugin_files",
    "probes",
    "filter",
    "sample",
    "output",
    "duration",
    "ready_file",
    "btf",
    "journey",
    "ringbuf",
    "otlp",
    "packet_id",
    "containers",
    "tunnels",
];

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Human-readable, one block per journey.
    Pretty,
    /// JSON lines, one object per journey (docs/output.md).
    Json,
    /// No journeys on stdout (with OTLP export); the summary goes to stderr.
    None,
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

/// The Docker engine's API socket, where container names come from.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// `[containers]` table: where container names come from
/// (docs/adr/014-operability.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawContainers {
    /// The Docker engine's API socket; empty: containers are not named.
    pub docker_socket: String,
}

impl Default for RawContainers {
    fn default() -> Self {
        RawContainers {
            docker_socket: DEFAULT_DOCKER_SOCKET.into(),
        }
    }
}

/// `[packet_id]` table (docs/adr/011-keyed-packet-id.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPacketId {
    /// The deployment's 128-bit packet-id key, 32 hex digits; the same on
    /// every agent. Unset: the public built-in key (with a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyText>,
}

/// `[tunnels]` table: UDP destination ports whose packets are a tunnel's
/// outer packets, traced as their inner packet (docs/adr/018-flannel-tunnels.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawTunnels {
    /// VXLAN ports (8-byte header, then an Ethernet frame). Default: 8472
    /// (flannel, the Linux default), 4789 (IANA).
    pub vxlan: PortList,
    /// Ports whose datagrams are a bare IP packet (flannel's UDP backend).
    /// Default: 8285.
    pub ip_in_udp: PortList,
}

impl Default for RawTunnels {
    fn default() -> Self {
        RawTunnels {
            vxlan: PortList::List(DEFAULT_VXLAN_PORTS.to_vec()),
            ip_in_udp: PortList::List(DEFAULT_IP_IN_UDP_PORTS.to_vec()),
        }
    }
}

/// Ports as a TOML array, one number, or a comma-separated string
/// (`VNT_TUNNELS__VXLAN=8472,4789`; empty for none).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PortList {
    /// `[8472, 4789]`
    List(Vec<u16>),
    /// `8472`
    One(u16),
    /// `"8472,4789"`
    Str(String),
}

impl PortList {
    fn ports(&self) -> Result<Vec<u16>, String> {
        match self {
            PortList::List(v) => Ok(v.clone()),
            PortList::One(p) => Ok(vec![*p]),
            PortList::Str(s) => s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u16>().map_err(|_| format!("`{p}` is not a port")))
                .collect(),
        }
    }
}

/// A key as written. Hex digits that happen to be all decimal arrive from
/// the environment as a number (figment parses `VNT_*` values), so a number
/// is read back as its 32 digits, leading zeros restored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeyText {
    /// `"00112233445566778899aabbccddeeff"`
    Hex(String),
    /// `00000000000000000000000000000001` in `VNT_PACKET_ID__KEY`.
    Digits(u64),
}

impl KeyText {
    fn text(&self) -> String {
        match self {
            KeyText::Hex(s) => s.clone(),
            KeyText::Digits(n) => format!("{n:032}"),
        }
    }
}

/// The configuration as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Plugins to load, by name or path.
    pub plugins: ListOrString,
    /// Extra plugin directories, searched first.
    pub plugin_dirs: ListOrString,
    /// Open plugin files that others could write (plugin_host::trust).
    pub allow_unsafe_plugin_files: bool,
    /// Opt-in probes to attach too, by name, or `all`.
    pub probes: ListOrString,
    /// Filter expression (see `--help`).
    pub filter: String,
    /// Sampling: `1/N`, `N`, `all`, or `auto` (1/1 with a filter, 1/100 without).
    pub sample: String,
    /// `pretty` or `json`.
    pub output: OutputFormat,
    /// Seconds to run, at most [`MAX_DURATION_SECS`]; 0 runs until SIGINT/SIGTERM.
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
    /// OpenTelemetry export (docs/otel.md).
    pub otlp: RawOtlp,
    /// Packet identity.
    #[serde(default)]
    pub packet_id: RawPacketId,
    /// Container names.
    #[serde(default)]
    pub containers: RawContainers,
    /// Tunnel ports.
    #[serde(default)]
    pub tunnels: RawTunnels,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            plugins: ListOrString::List(vec![]),
            plugin_dirs: ListOrString::List(vec![]),
            allow_unsafe_plugin_files: false,
            probes: ListOrString::List(vec![]),
            filter: String::new(),
            sample: "auto".into(),
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
            otlp: RawOtlp::default(),
            packet_id: RawPacketId::default(),
            containers: RawContainers::default(),
            tunnels: RawTunnels::default(),
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
    /// `--allow-unsafe-plugin-files`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unsafe_plugin_files: Option<bool>,
    /// `--probes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<String>,
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
    /// `--otlp-*` flags.
    #[serde(skip_serializing_if = "FlagOtlp::is_empty")]
    pub otlp: FlagOtlp,
    /// `--packet-id-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<RawPacketId>,
}

/// The flags as a configuration layer, so that errors say a value came from
/// the command line (rather than naming this type and a line of this file).
impl Provider for FlagLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("the command line")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self).data()
    }
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plugins by name or path, in the order given.
    pub plugins: Vec<String>,
    /// Extra plugin directories.
    pub plugin_dirs: Vec<PathBuf>,
    /// Whether plugin files must be safe to open.
    pub plugin_trust: crate::plugin_host::Trust,
    /// Opt-in probes to attach too.
    pub probes: OptIn,
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
    /// OTLP export, when an endpoint is configured.
    pub otlp: Option<OtlpConfig>,
    /// The packet-id key written into every plugin's eBPF object.
    pub packet_id_key: IdKey,
    /// Tunnel ports, written into every object (`[tunnels]`).
    pub tunnels: Tunnels,
    /// The Docker engine's socket, when containers are named.
    pub docker_socket: Option<PathBuf>,
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
    let env = Env::prefixed("VNT_").split("__").filter(|k| {
        let top = k.as_str().split('.').next().unwrap_or_default();
        ENV_KEYS.iter().any(|e| e.eq_ignore_ascii_case(top))
    });
    for layer in OtelEnv::from_process() {
        fig = fig.merge(layer);
    }
    let fig = fig.merge(env);
    // Before the flags, which would hide it: `[plugins.NAME]` (a table where
    // the list of plugins goes) is a misspelt `[plugin.NAME]`.
    if let Ok(figment::value::Value::Dict(_, tables)) = fig.find_value("plugins") {
        let name = tables
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "NAME".into());
        return Err(invalid(
            &fig,
            "plugins",
            format!(
                "`[plugins.{name}]` is not where a plugin's settings go: write `[plugin.{name}]` \
                 (singular); `plugins` is the list of plugins to load"
            ),
        ));
    }
    Ok(fig.merge(flags.clone()))
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

/// Sampling divisor when none is given: every packet when a filter narrows
/// what is traced (the 3 a.m. case: one flow, every packet), one in
/// [`AUTO_SAMPLE_UNFILTERED`] when the agent watches everything, so that an
/// always-on agent does not cost the host a third of its throughput
/// (BENCHMARKS.md).
pub fn auto_sample(filter: &FilterSpec) -> u32 {
    if *filter == FilterSpec::default() {
        AUTO_SAMPLE_UNFILTERED
    } else {
        1
    }
}

/// `auto` sampling without a filter keeps one packet in this many.
pub const AUTO_SAMPLE_UNFILTERED: u32 = 100;

/// Longest `duration` (365 days): a bounded run longer than that is a typo,
/// and the deadline of a huge one cannot be represented (`Instant + d` overflows).
/// `0` runs until SIGINT/SIGTERM.
pub const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

/// Smallest `ringbuf.bytes`: one page.
pub const MIN_RINGBUF_BYTES: u32 = 4096;

/// Largest `ringbuf.bytes` (256 MiB per plugin, 64 times the default): the
/// buffer is locked kernel memory, allocated per plugin at load; beyond this
/// a typo (2 GiB was accepted) takes the host's memory, and a larger buffer
/// only delays a consumer that cannot keep up.
pub const MAX_RINGBUF_BYTES: u32 = 256 * 1024 * 1024;

/// Largest `journey.max_in_flight` (2^20, 16 times the default): each open
/// journey holds its hops in memory, so the bound is the agent's memory bound.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

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
        let sample_n = if raw.sample.trim().eq_ignore_ascii_case("auto") {
            auto_sample(&filter)
        } else {
            parse_sample(&raw.sample).map_err(|m| invalid(fig, "sample", m))?
        };
        if raw.journey.idle_timeout_ms == 0 || raw.journey.idle_timeout_ms > 60_000 {
            return Err(invalid(
                fig,
                "journey.idle_timeout_ms",
                format!("{} is outside 1..=60000", raw.journey.idle_timeout_ms),
            ));
        }
        let mif = raw.journey.max_in_flight;
        if mif == 0 || mif > MAX_IN_FLIGHT {
            return Err(invalid(
                fig,
                "journey.max_in_flight",
                format!("{mif} is outside 1..={MAX_IN_FLIGHT}"),
            ));
        }
        let rb = raw.ringbuf.bytes;
        if !rb.is_power_of_two() || !(MIN_RINGBUF_BYTES..=MAX_RINGBUF_BYTES).contains(&rb) {
            return Err(invalid(
                fig,
                "ringbuf.bytes",
                format!(
                    "{rb} is not a power of two in {MIN_RINGBUF_BYTES}..={MAX_RINGBUF_BYTES} \
                     (4 KiB..256 MiB per plugin)"
                ),
            ));
        }
        if raw.duration > MAX_DURATION_SECS {
            return Err(invalid(
                fig,
                "duration",
                format!(
                    "{} s is more than {MAX_DURATION_SECS} s (365 days); use 0 to run until SIGINT/SIGTERM",
                    raw.duration
                ),
            ));
        }
        let plugins = raw.plugins.items(',');
        let probe_names: Vec<String> = raw
            .probes
            .items(',')
            .into_iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        let probes = OptIn {
            all: probe_names.iter().any(|n| n == "all"),
            names: probe_names.into_iter().filter(|n| n != "all").collect(),
        };
        let otlp = OtlpConfig::from_raw(&raw.otlp, fig)?;
        let packet_id_key = IdKey::from_hex(
            &raw.packet_id
                .key
                .as_ref()
                .map_or_else(|| DEFAULT_ID_KEY_HEX.to_string(), KeyText::text),
        )
        .map_err(|m| invalid(fig, "packet_id.key", m))?;
        let vxlan = raw
            .tunnels
            .vxlan
            .ports()
            .map_err(|m| invalid(fig, "tunnels.vxlan", m))?;
        let ip_in_udp = raw
            .tunnels
            .ip_in_udp
            .ports()
            .map_err(|m| invalid(fig, "tunnels.ip_in_udp", m))?;
        let tunnels = Tunnels(
            KernelTunnels::new(&vxlan, &ip_in_udp).map_err(|m| invalid(fig, "tunnels", m))?,
        );
        Ok(Config {
            plugins,
            plugin_dirs: raw
                .plugin_dirs
                .items(':')
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            plugin_trust: if raw.allow_unsafe_plugin_files {
                crate::plugin_host::Trust::AllowUnsafe
            } else {
                crate::plugin_host::Trust::SafeFilesOnly
            },
            probes,
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
            otlp,
            packet_id_key,
            tunnels,
            docker_socket: (!raw.containers.docker_socket.trim().is_empty())
                .then(|| PathBuf::from(raw.containers.docker_socket.trim())),
        })
    }
}

// ---------------------------------------------------------------------------
// `[otlp]`: OpenTelemetry export (docs/otel.md). The standard `OTEL_*`
// variables form a layer of their own: file < OTEL_* < VNT_* < flags.

/// Default OTLP protocol when none is configured.
pub const OTLP_DEFAULT_PROTOCOL: &str = "grpc";

/// A string map given as a TOML table or as `k=v,k2=v2` (the format of
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`; values may be
/// percent-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MapOrString {
    /// `{ key = "value" }`
    Map(BTreeMap<String, String>),
    /// `"key=value,key2=value2"`
    Str(String),
}

impl Default for MapOrString {
    fn default() -> Self {
        MapOrString::Map(BTreeMap::new())
    }
}

impl MapOrString {
    fn pairs(&self) -> Result<Vec<(String, String)>, String> {
        match self {
            MapOrString::Map(m) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            MapOrString::Str(s) => parse_key_values(s),
        }
    }
}

/// Parse `k=v,k2=v2`: keys and values trimmed, values percent-decoded, empty
/// members skipped (the W3C baggage subset the OpenTelemetry environment
/// variables use).
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for member in s.split(',') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let Some((k, v)) = member.split_once('=') else {
            return Err(format!("`{member}` is not key=value"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{member}` has an empty key"));
        }
        out.push((k.to_string(), percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{s}`: bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}`: percent escapes are not UTF-8"))
}

/// `[otlp.tls]`: PEM files for authenticated collectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlpTls {
    /// CA certificate(s) to verify the collector with, instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// Client private key (mutual TLS); needs `cert`.
    pub key: Option<PathBuf>,
}

/// `[otlp]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlp {
    /// Collector URL (`http://host:4317`); OTLP export is on when it is set.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Request headers (gRPC metadata), e.g. for authentication.
    pub headers: MapOrString,
    /// Timeout of one export request.
    pub timeout_ms: u64,
    /// `service.name` (default `vnt-agent`, or `service.name` in `resource`).
    pub service_name: Option<String>,
    /// Extra resource attributes (`host.name = "node-a"`).
    pub resource: MapOrString,
    /// Export journeys as traces.
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
    /// Interval between metric exports.
    pub metrics_interval_ms: u64,
    /// Bound of the export queue, in spans; beyond it journeys are dropped and counted.
    pub queue_spans: usize,
    /// Spans per export request.
    pub batch_spans: usize,
    /// Longest wait before a partial batch is sent.
    pub batch_delay_ms: u64,
    /// Distinct interface names used as metric labels; the rest become `other`.
    pub max_interfaces: usize,
    /// Distinct label sets each plugin-declared metric admits; further
    /// points are recorded without labels, flagged and counted.
    pub max_series_per_metric: usize,
    /// How long the agent may spend exporting what is queued when it stops.
    pub shutdown_timeout_ms: u64,
    /// Leave the agent's own export traffic (to and from the collector's
    /// addresses and port) out of tracing, so it cannot feed itself.
    pub exclude_own_traffic: bool,
    /// TLS files.
    pub tls: RawOtlpTls,
}

impl Default for RawOtlp {
    fn default() -> Self {
        RawOtlp {
            endpoint: None,
            protocol: OTLP_DEFAULT_PROTOCOL.into(),
            headers: MapOrString::default(),
            timeout_ms: 10_000,
            service_name: None,
            resource: MapOrString::default(),
            traces: true,
            metrics: true,
            metrics_interval_ms: 10_000,
            queue_spans: 32_768,
            batch_spans: 512,
            batch_delay_ms: 1_000,
            max_interfaces: 64,
            max_series_per_metric: 1_000,
            shutdown_timeout_ms: 5_000,
            exclude_own_traffic: true,
            tls: RawOtlpTls::default(),
        }
    }
}

/// `--otlp-*` flags.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOtlp {
    /// `--otlp-endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `--otlp-protocol`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `--otlp-header` (repeatable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

impl FlagOtlp {
    fn is_empty(&self) -> bool {
        self.endpoint.is_none() && self.protocol.is_none() && self.headers.is_none()
    }
}

/// The standard OpenTelemetry environment variables and the `[otlp]` keys
/// they set. Empty values count as unset.
pub const OTEL_ENV: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "headers"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "timeout_ms"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "tls.ca"),
    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "tls.cert"),
    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "tls.key"),
    ("OTEL_SERVICE_NAME", "service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "resource"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "metrics_interval_ms"),
    ("OTEL_TRACES_EXPORTER", "traces"),
    ("OTEL_METRICS_EXPORTER", "metrics"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "queue_spans"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "batch_spans"),
    ("OTEL_BSP_SCHEDULE_DELAY", "batch_delay_ms"),
];

/// One `OTEL_*` variable as a configuration layer, so that errors name it.
#[derive(Debug, Clone)]
pub struct OtelEnv {
    var: &'static str,
    key: &'static str,
    value: String,
}

impl OtelEnv {
    /// The layers for the variables set in this process's environment.
    pub fn from_process() -> Vec<OtelEnv> {
        OtelEnv::from_vars(|v| std::env::var(v).ok())
    }

    /// The layers for the variables `get` knows (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Vec<OtelEnv> {
        OTEL_ENV
            .iter()
            .filter_map(|(var, key)| {
                let value = get(var)?;
                (!value.trim().is_empty()).then(|| OtelEnv {
                    var,
                    key,
                    value: value.trim().to_string(),
                })
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        let v = &self.value;
        let leaf = match self.key {
            "timeout_ms"
            | "metrics_interval_ms"
            | "queue_spans"
            | "batch_spans"
            | "batch_delay_ms" => v
                .parse::<u64>()
                .map_or_else(|_| J::from(v.as_str()), J::from),
            // `none` turns a signal off, `otlp` on; anything else is a type error naming the variable.
            "traces" | "metrics" => match v.as_str() {
                "none" => J::Bool(false),
                "otlp" => J::Bool(true),
                other => J::from(other),
            },
            _ => J::from(v.as_str()),
        };
        let mut node = leaf;
        for part in self.key.rsplit('.') {
            node = serde_json::json!({ part: node });
        }
        serde_json::json!({ "otlp": node })
    }
}

impl Provider for OtelEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self.json()).data()
    }
}

/// `otlp.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// As written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// The validated `[otlp]` table.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// Collector base URL (`http(s)://host:port[/path]`).
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Headers / gRPC metadata.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// `service.name` override.
    pub service_name: Option<String>,
    /// Extra resource attributes, in order (later wins).
    pub resource: Vec<(String, String)>,
    /// Export traces.
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
    /// Metric export interval.
    pub metrics_interval: Duration,
    /// Queue bound in spans.
    pub queue_spans: usize,
    /// Spans per request.
    pub batch_spans: usize,
    /// Longest wait for a partial batch.
    pub batch_delay: Duration,
    /// Interface label values kept before folding into `other`.
    pub max_interfaces: usize,
    /// Label sets per plugin metric before overflow.
    pub max_series_per_metric: usize,
    /// Leave the export traffic out of tracing.
    pub exclude_own_traffic: bool,
    /// Time allowed to export the queue at exit.
    pub shutdown_timeout: Duration,
    /// CA file.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate file.
    pub tls_cert: Option<PathBuf>,
    /// Client key file.
    pub tls_key: Option<PathBuf>,
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl OtlpConfig {
    /// Validate `raw`; `None` when no endpoint is configured.
    pub fn from_raw(raw: &RawOtlp, fig: &Figment) -> Result<Option<OtlpConfig>, ConfigError> {
        let Some(endpoint) = raw
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            return Ok(None);
        };
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(invalid(
                fig,
                "otlp.endpoint",
                format!("`{endpoint}` is not a URL: write http://HOST:PORT or https://HOST:PORT"),
            ));
        }
        let protocol = match raw.protocol.trim().to_ascii_lowercase().as_str() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            other => {
                return Err(invalid(
                    fig,
                    "otlp.protocol",
                    format!("`{other}` is not supported: use grpc or http/protobuf"),
                ))
            }
        };
        let headers = raw
            .headers
            .pairs()
            .map_err(|m| invalid(fig, "otlp.headers", m))?;
        for (k, v) in &headers {
            if !is_header_name(k) {
                return Err(invalid(
                    fig,
                    "otlp.headers",
                    format!("`{k}` is not a valid header name"),
                ));
            }
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid(
                    fig,
                    "otlp.headers",
                    format!("the value of `{k}` has control characters"),
                ));
            }
        }
        let resource = raw
            .resource
            .pairs()
            .map_err(|m| invalid(fig, "otlp.resource", m))?;
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(invalid(fig, key, format!("{v} is outside {lo}..={hi}")))
            } else {
                Ok(v)
            }
        };
        let timeout_ms = range("otlp.timeout_ms", raw.timeout_ms, 1, 600_000)?;
        let interval_ms = range(
            "otlp.metrics_interval_ms",
            raw.metrics_interval_ms,
            100,
            3_600_000,
        )?;
        let queue = range("otlp.queue_spans", raw.queue_spans as u64, 1, 10_000_000)?;
        range("otlp.batch_spans", raw.batch_spans as u64, 1, queue)?;
        let delay_ms = range("otlp.batch_delay_ms", raw.batch_delay_ms, 1, 60_000)?;
        range("otlp.max_interfaces", raw.max_interfaces as u64, 1, 100_000)?;
        range(
            "otlp.max_series_per_metric",
            raw.max_series_per_metric as u64,
            1,
            100_000,
        )?;
        let shutdown_ms = range(
            "otlp.shutdown_timeout_ms",
            raw.shutdown_timeout_ms,
            0,
            600_000,
        )?;
        if raw.tls.cert.is_some() != raw.tls.key.is_some() {
            return Err(invalid(
                fig,
                if raw.tls.cert.is_some() {
                    "otlp.tls.cert"
                } else {
                    "otlp.tls.key"
                },
                "mutual TLS needs both otlp.tls.cert and otlp.tls.key",
            ));
        }
        Ok(Some(OtlpConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            protocol,
            headers,
            timeout: Duration::from_millis(timeout_ms),
            service_name: raw.service_name.clone().filter(|s| !s.trim().is_empty()),
            resource,
            traces: raw.traces,
            metrics: raw.metrics,
            metrics_interval: Duration::from_millis(interval_ms),
            queue_spans: raw.queue_spans,
            batch_spans: raw.batch_spans,
            batch_delay: Duration::from_millis(delay_ms),
            max_interfaces: raw.max_interfaces,
            max_series_per_metric: raw.max_series_per_metric,
            exclude_own_traffic: raw.exclude_own_traffic,
            shutdown_timeout: Duration::from_millis(shutdown_ms),
            tls_ca: raw.tls.ca.clone(),
            tls_cert: raw.tls.cert.clone(),
            tls_key: raw.tls.key.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Jail;

    fn load(file: Option<&str>, flags: FlagLayer) -> Result<Config, ConfigError> {
        let fig = figment(file.map(Path::new), &flags)?;
        Config::from_figment(&fig)
    }

    #[test]
    fn defaults_are_sensible() {
        Jail::expect_with(|_| {
            let c = load(None, FlagLayer::default()).unwrap();
            assert_eq!(c.sample_n, AUTO_SAMPLE_UNFILTERED, "no filter: sampled");
            let filtered = FlagLayer {
                filter: Some("port 53".into()),
                ..Default::default()
            };
            assert_eq!(
                load(None, filtered).unwrap().sample_n,
                1,
                "a filter: every packet"
            );
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
    fn opt_in_probes_come_from_every_layer() {
        Jail::expect_with(|jail| {
            let c = load(None, FlagLayer::default()).unwrap();
            assert_eq!(c.probes, crate::probes::OptIn::default());

            jail.create_file("vnt.toml", "probes = [\"veth_rx\"]\n")?;
            let c = load(Some("vnt.toml"), FlagLayer::default()).unwrap();
            assert_eq!(c.probes.names, vec!["veth_rx"]);
            assert!(!c.probes.all);

            jail.set_env("VNT_PROBES", "all");
            let c = load(Some("vnt.toml"), FlagLayer::default()).unwrap();
            assert!(c.probes.all);

            let flags = FlagLayer {
                probes: Some("veth_rx, other_probe".into()),
                ..Default::default()
            };
            let c = load(Some("vnt.toml"), flags).unwrap();
            assert_eq!(c.probes.names, vec!["veth_rx", "other_probe"]);
            assert!(!c.probes.all);

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
    fn containers_are_named_from_docker_unless_the_socket_is_empty() {
        Jail::expect_with(|jail| {
            let cfg = load(None, FlagLayer::default()).unwrap();
            assert_eq!(
                cfg.docker_socket.as_deref(),
                Some(Path::new(DEFAULT_DOCKER_SOCKET))
            );
            jail.create_file(
                "c.toml",
                "[containers]\ndocker_socket = \"/run/podman.sock\"\n",
            )?;
            let cfg = load(Some("c.toml"), FlagLayer::default()).unwrap();
            assert_eq!(
                cfg.docker_socket.as_deref(),
                Some(Path::new("/run/podman.sock"))
            );
            jail.set_env("VNT_CONTAINERS__DOCKER_SOCKET", "");
            let cfg = load(Some("c.toml"), FlagLayer::default()).unwrap();
            assert_eq!(cfg.docker_socket, None);
            jail.create_file("bad.toml", "[containers]\ndocker_sock = \"x\"\n")?;
            let err = load(Some("bad.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("docker_sock"), "{err}");
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
    fn tunnel_ports_from_file_and_env() {
        Jail::expect_with(|jail| {
            assert_eq!(
                load(None, FlagLayer::default()).unwrap().tunnels,
                Tunnels::default()
            );
            jail.create_file("t.toml", "[tunnels]\nvxlan = [4789]\nip_in_udp = []\n")?;
            let t = load(Some("t.toml"), FlagLayer::default()).unwrap().tunnels;
            assert_eq!(t.0, KernelTunnels::new(&[4789], &[]).unwrap());
            jail.set_env("VNT_TUNNELS__IP_IN_UDP", "8285,9000");
            let t = load(Some("t.toml"), FlagLayer::default()).unwrap().tunnels;
            assert_eq!(t.0, KernelTunnels::new(&[4789], &[8285, 9000]).unwrap());
            jail.set_env("VNT_TUNNELS__VXLAN", "1,2,3");
            let err = load(Some("t.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("tunnels") && err.contains("at most 4"),
                "{err}"
            );
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

    /// Issue 7: a huge `duration` was accepted and the agent panicked once its
    /// probes were attached (`Instant::now() + d` overflowed).
    #[test]
    fn huge_duration_is_refused_naming_the_key_and_source() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "duration = 9223372036854775807\n")?;
            let err = load(Some("d.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`duration`") && err.contains("d.toml"),
                "{err}"
            );
            jail.set_env("VNT_DURATION", (MAX_DURATION_SECS + 1).to_string());
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(err.contains("`duration`") && err.contains("VNT_"), "{err}");
            let flags = FlagLayer {
                duration: Some(u64::MAX),
                ..Default::default()
            };
            let err = load(None, flags).unwrap_err().to_string();
            assert!(err.contains("`duration` (from the command line)"), "{err}");
            jail.set_env("VNT_DURATION", MAX_DURATION_SECS.to_string());
            let c = load(None, FlagLayer::default()).unwrap();
            assert_eq!(c.duration, Some(Duration::from_secs(MAX_DURATION_SECS)));
            Ok(())
        });
    }

    /// Issue 13: `ringbuf.bytes` accepted 2 GiB per plugin and
    /// `journey.max_in_flight` had no upper bound.
    #[test]
    fn size_settings_are_bounded_naming_key_and_bound() {
        Jail::expect_with(|jail| {
            jail.create_file("rb.toml", "[ringbuf]\nbytes = 2147483648\n")?;
            let err = load(Some("rb.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`ringbuf.bytes`")
                    && err.contains("268435456")
                    && err.contains("rb.toml"),
                "{err}"
            );
            jail.create_file("rb.toml", "[ringbuf]\nbytes = 268435456\n")?;
            assert_eq!(
                load(Some("rb.toml"), FlagLayer::default())
                    .unwrap()
                    .ringbuf_bytes,
                MAX_RINGBUF_BYTES
            );
            jail.set_env(
                "VNT_JOURNEY__MAX_IN_FLIGHT",
                (MAX_IN_FLIGHT + 1).to_string(),
            );
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(
                err.contains("`journey.max_in_flight`")
                    && err.contains("1048576")
                    && err.contains("VNT_"),
                "{err}"
            );
            jail.set_env("VNT_JOURNEY__MAX_IN_FLIGHT", MAX_IN_FLIGHT.to_string());
            assert_eq!(
                load(None, FlagLayer::default()).unwrap().max_in_flight,
                MAX_IN_FLIGHT
            );
            jail.set_env("VNT_JOURNEY__MAX_IN_FLIGHT", "0");
            assert!(load(None, FlagLayer::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn packet_id_key_from_every_layer() {
        Jail::expect_with(|jail| {
            assert!(load(None, FlagLayer::default())
                .unwrap()
                .packet_id_key
                .is_default());
            let k = "0123456789abcdef0123456789abcdef";
            jail.create_file("k.toml", &format!("[packet_id]\nkey = \"{k}\"\n"))?;
            let from_file = load(Some("k.toml"), FlagLayer::default())
                .unwrap()
                .packet_id_key;
            assert_eq!(from_file, IdKey::from_hex(k).unwrap());
            jail.set_env("VNT_PACKET_ID__KEY", "fedcba9876543210fedcba9876543210");
            let from_env = load(Some("k.toml"), FlagLayer::default())
                .unwrap()
                .packet_id_key;
            assert_ne!(from_env, from_file);
            let flags = FlagLayer {
                packet_id: Some(RawPacketId {
                    key: Some(KeyText::Hex("short".into())),
                }),
                ..Default::default()
            };
            let err = load(Some("k.toml"), flags).unwrap_err().to_string();
            assert!(
                err.contains("`packet_id.key` (from the command line)") && err.contains("32 hex"),
                "{err}"
            );
            assert!(!err.contains(k), "the key is not echoed: {err}");
            // All decimal digits: figment hands the variable over as a number.
            jail.set_env("VNT_PACKET_ID__KEY", "00000000000000000000000000000001");
            let digits = load(None, FlagLayer::default()).unwrap().packet_id_key;
            assert_eq!(
                digits,
                IdKey::from_hex("00000000000000000000000000000001").unwrap()
            );
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

    #[test]
    fn otlp_is_off_without_an_endpoint() {
        Jail::expect_with(|jail| {
            jail.clear_env(); // OTEL_* of the machine running the tests must not leak in
            let c = load(None, FlagLayer::default()).unwrap();
            assert!(c.otlp.is_none());
            Ok(())
        });
    }

    #[test]
    fn otel_environment_variables_configure_otlp() {
        Jail::expect_with(|jail| {
            jail.clear_env(); // OTEL_* of the machine running the tests must not leak in
            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
            jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
            jail.set_env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc,x-team=net",
            );
            jail.set_env("OTEL_EXPORTER_OTLP_TIMEOUT", "2500");
            jail.set_env("OTEL_SERVICE_NAME", "vnt-lab");
            jail.set_env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "host.name=node-a, k8s.node.name=n1",
            );
            jail.set_env("OTEL_METRICS_EXPORTER", "none");
            jail.set_env("OTEL_BSP_MAX_QUEUE_SIZE", "1000");
            jail.set_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem");
            jail.set_env("OTEL_TRACES_EXPORTER", ""); // empty: unset
            let o = load(None, FlagLayer::default()).unwrap().otlp.unwrap();
            assert_eq!(o.endpoint, "http://collector:4318");
            assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
            assert_eq!(
                o.headers,
                vec![
                    ("authorization".to_string(), "Bearer abc".to_string()),
                    ("x-team".to_string(), "net".to_string())
                ]
            );
            assert_eq!(o.timeout, Duration::from_millis(2500));
            assert_eq!(o.service_name.as_deref(), Some("vnt-lab"));
            assert_eq!(
                o.resource,
                vec![
                    ("host.name".to_string(), "node-a".to_string()),
                    ("k8s.node.name".to_string(), "n1".to_string())
                ]
            );
            assert!(o.traces && !o.metrics);
            assert_eq!(o.queue_spans, 1000);
            assert_eq!(o.tls_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
            Ok(())
        });
    }

    #[test]
    fn otlp_layers_file_then_otel_env_then_vnt_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.clear_env(); // OTEL_* of the machine running the tests must not leak in
            jail.create_file(
                "vnt.toml",
                "[otlp]\nendpoint = \"http://file:4317\"\nqueue_spans = 2048\nmetrics_interval_ms = 500\n[otlp.resource]\n\"host.name\" = \"from-file\"\n[otlp.tls]\nca = \"ca.pem\"\n",
            )?;
            let o = load(Some("vnt.toml"), FlagLayer::default())
                .unwrap()
                .otlp
                .unwrap();
            assert_eq!(o.endpoint, "http://file:4317");
            assert_eq!(o.protocol, OtlpProtocol::Grpc, "grpc by default");
            assert_eq!(
                (o.queue_spans, o.metrics_interval),
                (2048, Duration::from_millis(500))
            );
            assert_eq!(
                o.resource,
                vec![("host.name".to_string(), "from-file".to_string())]
            );

            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-env:4317");
            let o = load(Some("vnt.toml"), FlagLayer::default())
                .unwrap()
                .otlp
                .unwrap();
            assert_eq!(o.endpoint, "http://otel-env:4317");
            assert_eq!(o.queue_spans, 2048, "other file keys stay");

            jail.set_env("VNT_OTLP__ENDPOINT", "http://vnt-env:4317");
            let o = load(Some("vnt.toml"), FlagLayer::default())
                .unwrap()
                .otlp
                .unwrap();
            assert_eq!(o.endpoint, "http://vnt-env:4317");

            let flags = FlagLayer {
                otlp: FlagOtlp {
                    endpoint: Some("https://flag:4317".into()),
                    protocol: Some("http/protobuf".into()),
                    headers: Some([("api-key".to_string(), "k".to_string())].into()),
                },
                ..Default::default()
            };
            let o = load(Some("vnt.toml"), flags).unwrap().otlp.unwrap();
            assert_eq!(o.endpoint, "https://flag:4317");
            assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
            assert_eq!(o.headers, vec![("api-key".to_string(), "k".to_string())]);
            Ok(())
        });
    }

    #[test]
    fn otlp_errors_name_the_key_and_where_it_came_from() {
        Jail::expect_with(|jail| {
            jail.clear_env(); // OTEL_* of the machine running the tests must not leak in
            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317");
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(
                err.contains("otlp.endpoint") && err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
                "{err}"
            );
            assert!(err.contains("http://"), "says how to write it: {err}");

            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
            jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(
                err.contains("otlp.protocol") && err.contains("http/json"),
                "{err}"
            );

            jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
            jail.set_env("OTEL_EXPORTER_OTLP_TIMEOUT", "soon");
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(err.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{err}");

            jail.set_env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000");
            jail.set_env("OTEL_TRACES_EXPORTER", "zipkin");
            let err = load(None, FlagLayer::default()).unwrap_err().to_string();
            assert!(err.contains("OTEL_TRACES_EXPORTER"), "{err}");

            jail.set_env("OTEL_TRACES_EXPORTER", "otlp");
            jail.create_file("t.toml", "[otlp.tls]\ncert = \"c.pem\"\n")?;
            let err = load(Some("t.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("otlp.tls.cert") && err.contains("otlp.tls.key"),
                "{err}"
            );

            jail.create_file(
                "h.toml",
                "[otlp]\nheaders = \"bad header=1\"\nbatch_spans = 0\n",
            )?;
            let err = load(Some("h.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("otlp.headers") && err.contains("h.toml"),
                "{err}"
            );

            jail.create_file("u.toml", "[otlp]\nendpont = \"http://x:1\"\n")?;
            let err = load(Some("u.toml"), FlagLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("endpont"), "unknown keys are named: {err}");
            Ok(())
        });
    }

    #[test]
    fn key_values_are_percent_decoded() {
        assert_eq!(
            parse_key_values("a=1, b = x%2Cy ,,c=%E2%9C%93").unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x,y".to_string()),
                ("c".to_string(), "\u{2713}".to_string())
            ]
        );
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("=v").is_err());
        assert!(parse_key_values("a=%zz").is_err());
    }
}

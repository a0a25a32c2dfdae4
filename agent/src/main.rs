//! `vnt-agent`: parse the command line, load the configuration, set up
//! logging, run; errors become short messages and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vnt_agent::config::{self, Config, FlagLayer, FlagOtlp, OutputFormat};
use vnt_agent::plugin_host;
use vnt_agent::run::{self, RunError};

const AFTER_HELP: &str = "\
FILTER (--filter): primitives joined by `and`, checked in the kernel before any event is made:
  host ADDR[/LEN]  src ADDR[/LEN]  dst ADDR[/LEN]  port N  sport N  dport N
  proto tcp|udp|icmp|icmpv6|N  ip  ip6  dev IFNAME  netns INODE[,INODE..]
  e.g. --filter 'host 10.0.0.0/24 and proto udp and dport 53'
  Non-first IP fragments carry no ports: `proto` matches every fragment, `port` only the first.

SAMPLING (--sample 1/N): a packet is kept when hash(packet identity) % N == 0, decided in the
  kernel the same way at every hook and on every host, so a kept packet is kept everywhere.
  Default `auto`: every packet when --filter narrows what is traced, 1/100 when it does not.

PACKET ID: the id that joins a packet's hops, sampling and cross-host traces is a keyed hash
  (SipHash-1-3) of its invariant headers and first payload bytes under packet_id.key, 128 bits
  as 32 hex digits, the same on every agent of a deployment. Unset, a public built-in key is
  used and a warning logged: ids are then predictable and a sender can steer sampling.

CONFIGURATION: built-in defaults < --config FILE (TOML) < VNT_* environment < flags.
  Keys: plugins, plugin_dirs, allow_unsafe_plugin_files, probes, filter, sample, output, duration,
  ready_file, btf, [journey] idle_timeout_ms (1..=60000), max_in_flight (1..=1048576); [ringbuf]
  bytes (a power of two, 4096..=268435456 per plugin); [packet_id] key; [containers]
  docker_socket (container names from Docker's API; empty turns it off); [plugin.NAME] (passed to
  plugin NAME);
  [otlp] endpoint, protocol, headers, resource, queue_spans, ..., [otlp.tls] ca, cert, key (docs/otel.md).
  Environment: VNT_SAMPLE=1/10, VNT_PLUGINS=veth,ovs, VNT_JOURNEY__IDLE_TIMEOUT_MS=50, ...

PLUGINS are found as libvnt_plugin_NAME.so in: --plugin-dir, $VNT_PLUGIN_PATH, the agent's own
  directory and ../lib/vnt/plugins beside it, /usr/local/lib/vnt/plugins, /usr/lib/vnt/plugins.
  A plugin file (its directory, and every symlink on the way) must be owned by root or the
  agent's user and not writable by group or others, else it is refused; override with
  --allow-unsafe-plugin-files (allow_unsafe_plugin_files = true, VNT_ALLOW_UNSAFE_PLUGIN_FILES).

OPENTELEMETRY: --otlp-endpoint URL (or [otlp] endpoint, or OTEL_EXPORTER_OTLP_ENDPOINT) sends
  each journey as a trace (root span + one span per hop) and metrics over OTLP; --output keeps
  working alongside (`--output none` for OTLP only). OTEL_EXPORTER_OTLP_PROTOCOL, _HEADERS,
  OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured; see docs/otel.md.
  Across hosts, each agent's spans are on its host's clock: `vnt-agent align` between the agents
  and the collector puts each packet's trace on one clock (docs/otel.md).

SIGNALS: SIGINT and SIGTERM stop the agent cleanly (journeys in flight flushed, OTLP exported,
  every probe detached, the summary written), also while it is still attaching; SIGHUP is
  logged and ignored (there is nothing to reload).

Flags may be given before or after the subcommand (`vnt-agent plugins --plugin-dir DIR`).

PRIVILEGES: root's uid, and CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_PTRACE (Linux >= 5.8) or
  CAP_SYS_ADMIN CAP_NET_ADMIN CAP_SYS_PTRACE; a run checks them first and names what is missing.

EXIT CODES: 0 ok, 1 runtime error, 2 bad configuration or usage, 3 plugin error,
  4 kernel/eBPF error (permissions, missing BTF, probe that cannot attach).

Logs go to stderr (level: VNT_LOG or --log-level); journeys to stdout.";

#[derive(Debug, Parser)]
#[command(
    name = "vnt-agent",
    version,
    about = "Follow every packet through a virtual network: per-hop latency and drops from eBPF probes",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Plugins to load, comma-separated names (veth,ovs) or paths to .so files.
    #[arg(short, long, value_name = "LIST", global = true)]
    plugins: Option<String>,

    /// Also attach these opt-in probes (comma-separated names from `vnt-agent plugins`,
    /// e.g. veth_rx), or `all`. By default a plugin attaches the smallest set of probes
    /// that gives whole journeys.
    #[arg(long, value_name = "LIST", global = true)]
    probes: Option<String>,

    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Keep only matching packets (see FILTER below).
    #[arg(short, long, value_name = "EXPR", global = true)]
    filter: Option<String>,

    /// The deployment's 128-bit packet-id key as 32 hex digits, the same on every agent
    /// (see PACKET ID below). Prefer the config file or VNT_PACKET_ID__KEY: a flag is
    /// visible to every user in the process list.
    #[arg(long, value_name = "HEX", global = true)]
    packet_id_key: Option<String>,

    /// Keep one packet in N: `1/N`, `N`, `all` or `auto` [default: auto = 1/1 with --filter, 1/100 without].
    #[arg(short, long, value_name = "1/N", global = true)]
    sample: Option<String>,

    /// Output format [default: pretty].
    #[arg(short, long, value_enum, global = true)]
    output: Option<OutputFormat>,

    /// Stop after SECS seconds, at most 31536000 (365 days) [default: 0 = run until SIGINT/SIGTERM].
    #[arg(short, long, value_name = "SECS", global = true)]
    duration: Option<u64>,

    /// Also search DIR for plugins (repeatable; searched first).
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    plugin_dirs: Vec<String>,

    /// Open plugin files even when someone other than root or the agent's user could write
    /// them (or a symlink or directory on the way); refused by default (docs/plugin-guide.md).
    #[arg(long, global = true)]
    allow_unsafe_plugin_files: bool,

    /// Write this file (JSON: pid, probes in use) once every probe is attached; removed at exit.
    #[arg(long, value_name = "PATH", global = true)]
    ready_file: Option<PathBuf>,

    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH", global = true)]
    btf: Option<PathBuf>,

    /// Send journeys (traces) and metrics to this OTLP collector, e.g. http://localhost:4317.
    #[arg(long, value_name = "URL", global = true)]
    otlp_endpoint: Option<String>,

    /// OTLP transport [default: grpc].
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"], global = true)]
    otlp_protocol: Option<String>,

    /// OTLP request header / gRPC metadata KEY=VALUE (repeatable), e.g. authorization=Bearer...
    #[arg(long = "otlp-header", value_name = "KEY=VALUE", value_parser = parse_header, global = true)]
    otlp_headers: Vec<(String, String)>,

    /// Log level (error, warn, info, debug, trace, off) or a tracing filter (warn,vnt_agent=debug).
    #[arg(long, value_name = "LEVEL", env = "VNT_LOG", default_value = "info", value_parser = parse_log_level, global = true)]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the plugins found on the search path: version, ABI, probes, and whether each
    /// probe can attach on this kernel (tried as `check` does; needs root).
    Plugins {
        /// Also list test fixtures (plugins built for the agent's own tests).
        #[arg(long)]
        all: bool,
    },
    /// Report the kernel's eBPF features and, for every probe of the plugins, the hook
    /// variant a run would use or why none can (each is really loaded and attached, then
    /// detached). Exit 0 when every required probe can attach, 4 when one cannot.
    /// Checks the plugins of --plugins (or the configuration), else every plugin found;
    /// --filter's `dev` names the interfaces TC probes attach to; --output json for JSON.
    Check,
    /// Stand between agents and the collector and put the spans of each packet's trace on
    /// one clock: receives OTLP (gRPC and HTTP/protobuf on one port) from the agents, learns
    /// each pair of hosts' clock offset from packets seen both ways, moves the receiving
    /// host's spans onto the origin host's clock (vnt.clock.* attributes say by how much, how
    /// sure, or `vnt.clock.aligned=false` without traffic back), and sends everything on to
    /// --otlp-endpoint. Writes a JSON summary on stdout at exit (docs/otel.md).
    Align {
        /// Where agents send their OTLP (their --otlp-endpoint): gRPC and HTTP/protobuf.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
        /// How long a trace waits for the other hosts' spans, in milliseconds (more than
        /// the agents' batch delay, otlp.batch_delay_ms).
        #[arg(long, value_name = "MS", default_value_t = 3000)]
        hold_ms: u64,
        /// Offsets are estimated from the packets of the last SECS seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        window_secs: u64,
        /// Spans held at most; beyond, the oldest traces go out before their hold is over.
        #[arg(long, value_name = "N", default_value_t = 32_768)]
        max_spans: usize,
    },
}

/// `--otlp-header`: `KEY=VALUE`, both trimmed; the key must not be empty.
/// (Header names and values are checked further with the rest of `[otlp]`.)
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        Some(_) => Err(format!("`{s}` has an empty key: write KEY=VALUE")),
        None => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// `--log-level` / `VNT_LOG`: a level, or a tracing filter whose directives
/// are `LEVEL` or `TARGET[SPAN]=LEVEL`. A bare word that is no level (a typo
/// such as `debgu`) would be taken by tracing for a target name and silently
/// log nothing of the agent: refused. Empty is the default, `info`.
fn parse_log_level(s: &str) -> Result<String, String> {
    let listing = || format!("valid levels: {}", LOG_LEVELS.join(", "));
    if s.trim().is_empty() {
        return Ok("info".into()); // `VNT_LOG=` as if unset
    }
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=')
            && !LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "`{directive}` is not a log level ({}; or a filter such as warn,vnt_agent=debug)",
                listing()
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("`{s}`: {e} ({})", listing()))
}

fn init_logging(level: &str) {
    // Validated by parse_log_level.
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .compact()
        .init();
}

fn list_plugins(cfg: &Config, all: bool) -> ExitCode {
    let dirs = plugin_host::search_path(&cfg.plugin_dirs);
    let found = plugin_host::discover(&dirs);
    if found.is_empty() {
        eprintln!(
            "no plugins found; searched: {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        );
        return ExitCode::from(3);
    }
    let mut listed = Vec::new();
    let mut hidden = 0;
    for (name, path) in found {
        match plugin_host::inspect(&path, cfg.plugin_trust) {
            Ok(m) if m.test_fixture && !all => hidden += 1,
            Ok(m) => listed.push((name, path, Ok(m))),
            Err(e) => listed.push((name, path, Err(e))),
        }
    }
    let usable: Vec<PathBuf> = listed
        .iter()
        .filter(|(_, _, m)| m.is_ok())
        .map(|(_, p, _)| p.clone())
        .collect();
    let reports = vnt_agent::check::probe_reports(cfg, &usable);
    let mut reports = usable.iter().zip(&reports);
    for (name, path, meta) in &listed {
        let m = match meta {
            Ok(m) => m,
            Err(e) => {
                println!("{name}: unusable: {e}");
                continue;
            }
        };
        let report = reports.next().map(|(_, r)| r);
        println!(
            "{name} {} (ABI {}.{}){} - {}",
            m.version,
            m.abi_major,
            m.abi_minor,
            if m.test_fixture {
                " (test fixture)"
            } else {
                ""
            },
            m.description
        );
        println!("  {}", path.display());
        if let Some(e) = report.and_then(|r| r.error.as_deref()) {
            println!("  on this kernel: unknown ({e}); `vnt-agent check` as root says more");
        }
        for p in &m.probes {
            let alts: Vec<String> = p
                .alternatives
                .iter()
                .map(|a| format!("{}:{}", a.kind.map(|k| k.as_str()).unwrap_or("?"), a.target))
                .collect();
            println!(
                "  probe {}{}{}: {}",
                p.name,
                if p.required { " (required)" } else { "" },
                if p.opt_in { " (opt-in: --probes)" } else { "" },
                alts.join(" | ")
            );
            let Some(r) = report.and_then(|r| r.probes.iter().find(|r| r.name == p.name)) else {
                continue;
            };
            match &r.hook {
                Some(h) => println!("    here: attaches as {h}"),
                None => println!(
                    "    here: CANNOT ATTACH ({})",
                    r.tried
                        .iter()
                        .map(|t| format!("{}: {}", t.hook, t.error.lines().next().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        }
        for f in &m.fields {
            println!(
                "  field {} ({:?}{}{}): {}",
                f.key,
                f.kind,
                if f.unit.is_empty() {
                    String::new()
                } else {
                    format!(", {}", f.unit)
                },
                if f.low_cardinality {
                    ""
                } else {
                    ", high cardinality"
                },
                f.description
            );
        }
        for mt in &m.metrics {
            let labels: Vec<&str> = mt
                .labels
                .iter()
                .filter_map(|&l| m.fields.get(usize::from(l)).map(|f| &*f.key))
                .collect();
            println!(
                "  metric vnt.{}.{} ({:?}{}){}: {}",
                m.name.replace('-', "_"),
                mt.name,
                mt.kind,
                if mt.unit.is_empty() {
                    String::new()
                } else {
                    format!(", {}", mt.unit)
                },
                if labels.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", labels.join(", "))
                },
                mt.description
            );
        }
    }
    if hidden > 0 {
        eprintln!("({hidden} test fixture(s) not listed; `vnt-agent plugins --all` lists them)");
    }
    ExitCode::SUCCESS
}

fn align(opts: vnt_agent::align::Options, cfg: &Config) -> ExitCode {
    use vnt_agent::align::AlignError;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vnt-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(vnt_agent::align::run(opts, cfg.otlp.as_ref())) {
        Ok(summary) => {
            let json = serde_json::json!({ "aligner": summary });
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vnt-agent: {e}");
            ExitCode::from(match e {
                AlignError::NoEndpoint | AlignError::Otlp(_) | AlignError::Listen { .. } => 2,
                AlignError::Io(_) => 1,
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);

    let flags = FlagLayer {
        plugins: cli.plugins.clone(),
        probes: cli.probes.clone(),
        plugin_dirs: (!cli.plugin_dirs.is_empty()).then(|| cli.plugin_dirs.clone()),
        allow_unsafe_plugin_files: cli.allow_unsafe_plugin_files.then_some(true),
        filter: cli.filter.clone(),
        sample: cli.sample.clone(),
        output: cli.output,
        duration: cli.duration,
        ready_file: cli.ready_file.clone(),
        btf: cli.btf.clone(),
        otlp: FlagOtlp {
            endpoint: cli.otlp_endpoint.clone(),
            protocol: cli.otlp_protocol.clone(),
            headers: (!cli.otlp_headers.is_empty())
                .then(|| cli.otlp_headers.iter().cloned().collect()),
        },
        packet_id: cli.packet_id_key.clone().map(|key| config::RawPacketId {
            key: Some(config::KeyText::Hex(key)),
        }),
    };
    let cfg = match config::figment(cli.config.as_deref(), &flags)
        .and_then(|f| Config::from_figment(&f))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vnt-agent: {e}");
            return ExitCode::from(2);
        }
    };

    if cfg.packet_id_key.is_default() && cli.command.is_none() {
        tracing::warn!(
            "packet_id.key is not set: using the public built-in key, so anyone can predict packet \
             ids and steer sampling; set the same secret key on every agent of the deployment \
             (packet_id.key, VNT_PACKET_ID__KEY or --packet-id-key; `openssl rand -hex 16`)"
        );
    }
    if let Some(Command::Plugins { all }) = cli.command {
        return list_plugins(&cfg, all);
    }
    if let Some(Command::Check) = cli.command {
        return vnt_agent::check::main(&cfg);
    }
    if let Some(Command::Align {
        listen,
        hold_ms,
        window_secs,
        max_spans,
    }) = cli.command
    {
        let opts = vnt_agent::align::Options {
            listen,
            hold: std::time::Duration::from_millis(hold_ms),
            window: std::time::Duration::from_secs(window_secs),
            max_spans,
            ready_file: cfg.ready_file.clone(),
            duration: cfg.duration,
        };
        return align(opts, &cfg);
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vnt-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let stdout = Box::new(std::io::BufWriter::new(std::io::stdout()));
    match local.block_on(&rt, run::run(cfg, stdout)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnt-agent: {e}");
            ExitCode::from(match e {
                RunError::Otlp(_) | RunError::Config(_) => 2,
                RunError::Plugin(_) | RunError::NoPlugins => 3,
                RunError::Probe(_) | RunError::Kernel(_) => 4,
                RunError::Io(_) => 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Issue 7: `--otlp-header novalue` was taken as the header `novalue` with an empty value.
    #[test]
    fn otlp_header_needs_key_and_value() {
        assert_eq!(
            parse_header(" authorization = Bearer x=y "),
            Ok(("authorization".into(), "Bearer x=y".into()))
        );
        assert_eq!(parse_header("k="), Ok(("k".into(), String::new())));
        assert!(parse_header("novalue").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_header(" =v").is_err());
    }

    /// Issue 7: an unknown level silently logged at `info` (or, taken for a
    /// target name, logged nothing of the agent).
    #[test]
    fn log_level_must_be_a_level_or_a_filter() {
        for ok in [
            "info",
            "WARN",
            "off",
            "trace",
            "warn,vnt_agent=debug",
            "vnt_agent=trace",
        ] {
            assert_eq!(parse_log_level(ok).as_deref(), Ok(ok));
        }
        assert_eq!(parse_log_level(" ").as_deref(), Ok("info"));
        for bad in ["debgu", "verbose", "warn,loud", "vnt_agent=loud"] {
            let err = parse_log_level(bad).unwrap_err();
            assert!(
                err.contains("error, warn, info, debug, trace, off"),
                "{bad}: {err}"
            );
        }
    }

    /// Issue 7: flags given after the subcommand were refused.
    #[test]
    fn flags_work_on_either_side_of_the_subcommand() {
        for args in [
            &[
                "vnt-agent",
                "plugins",
                "--plugin-dir",
                "/d",
                "--log-level",
                "warn",
            ][..],
            &[
                "vnt-agent",
                "--plugin-dir",
                "/d",
                "--log-level",
                "warn",
                "plugins",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(matches!(cli.command, Some(Command::Plugins { .. })));
            assert_eq!(cli.plugin_dirs, ["/d"]);
            assert_eq!(cli.log_level, "warn");
        }
        let cli = Cli::try_parse_from([
            "vnt-agent",
            "check",
            "--plugins",
            "veth",
            "--output",
            "json",
            "--btf",
            "/b",
            "--filter",
            "dev eth0",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Check)));
        assert_eq!(cli.plugins.as_deref(), Some("veth"));
        assert_eq!(cli.output, Some(OutputFormat::Json));
        assert_eq!(cli.btf.as_deref(), Some(std::path::Path::new("/b")));
        assert_eq!(cli.filter.as_deref(), Some("dev eth0"));
    }
}

//! The agent's main loop: load plugins, attach their probes, read their ring
//! buffers, build journeys, write them out, and stop cleanly.
//!
//! Threads (docs/adr/015-stalls-and-decoder-watchdog.md): each plugin has a
//! decoder thread that drains its ring buffer and decodes records through
//! the plugin (`decoder.rs`), sending batches of observations over a bounded
//! channel to this loop, which builds journeys, names them and hands them to
//! the output's writer thread and to OTLP's export thread. A stalled stdout
//! or a hung decoder therefore stops neither this loop nor SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use vnt_plugin_api::Observation;

use crate::config::Config;
use crate::containers::Containers;
use crate::decoder::{Batch, Decoder, HANG_TIMEOUT};
use crate::export::otlp::{Otlp, OtlpError};
use crate::export::plugin_metrics::{PluginMetrics, DEFAULT_MAX_SERIES};
use crate::export::view::PluginSummary;
use crate::export::{JourneyView, Names, Output, Summary, SummaryWritten, DRAIN_TIMEOUT};
use crate::journey::{Builder, Journey};
use crate::kernel::btf::KernelBtf;
use crate::kernel::clock::{monotonic_ns, WallClock};
use crate::kernel::drop_reason::DropReasons;
use crate::kernel::netns::NetnsResolver;
use crate::kernel::process::ProcessNames;
use crate::plugin_host::{self, LoadedPlugin, PluginError, PluginMeta};
use crate::probes::stats::StatTotals;
use crate::probes::{self, KernelStats, ProbeError};
use crate::signals::{Signals, Stop};

/// Fatal errors of a run.
#[derive(Debug, Error)]
pub enum RunError {
    /// Plugin could not be found, opened or started.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// eBPF could not be loaded or attached.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Kernel prerequisites missing (BTF).
    #[error("{0}")]
    Kernel(String),
    /// OTLP export could not be set up.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The configuration does not fit the loaded plugins.
    #[error("{0}")]
    Config(String),
    /// No plugin requested.
    #[error("no plugins requested: pass --plugins NAME[,NAME..] (see `vnt-agent plugins` for the available ones)")]
    NoPlugins,
    /// I/O on the ready file or the output.
    #[error("{0}")]
    Io(String),
}

const TICK: Duration = Duration::from_millis(10);

fn write_ready_file(
    path: &Path,
    plugins: &BTreeMap<String, PluginSummary>,
) -> Result<(), RunError> {
    let probes: BTreeMap<&String, &BTreeMap<String, String>> =
        plugins.iter().map(|(n, p)| (n, &p.probes)).collect();
    let body = serde_json::json!({ "pid": std::process::id(), "probes": probes });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| RunError::Io(format!("cannot write ready file {}: {e}", path.display())))
}

/// How long a finished journey stays open to joins when a plugin joins by
/// TCP sequence number: a few of the readers' drain ticks.
const JOIN_LINGER_NS: u64 = 50_000_000;

/// What names the places hops happen in: network namespaces (their
/// `ip netns` names and owners) and the containers they belong to.
struct Places {
    netns: NetnsResolver,
    containers: Containers,
}

/// Run until SIGINT/SIGTERM or `duration`; return the summary. SIGHUP is
/// ignored (crate::signals).
pub async fn run(cfg: Config, out: Box<dyn Write + Send>) -> Result<Summary, RunError> {
    if cfg.plugins.is_empty() {
        return Err(RunError::NoPlugins);
    }
    // Before anything is loaded: a missing capability named with its use,
    // not an EPERM from deep inside a load.
    crate::kernel::caps::check().map_err(RunError::Kernel)?;
    // First of all: a signal while plugins load or probes attach must not
    // kill the agent half-way (no summary, TC filters left behind).
    let mut signals = Signals::install()
        .map_err(|e| RunError::Io(format!("cannot handle SIGINT/SIGTERM/SIGHUP: {e}")))?;
    // Resolve every plugin before touching the kernel, so a typo costs nothing.
    let dirs = plugin_host::search_path(&cfg.plugin_dirs);
    let mut loaded = Vec::new();
    // Plugins whose library is at fault: disabled, the others go on.
    let mut refused: Vec<(String, PluginError)> = Vec::new();
    for entry in &cfg.plugins {
        let path: PathBuf = plugin_host::resolve(entry, &dirs)?;
        // `[plugin.NAME]`, NAME as given or, for a path, the file's plugin name.
        let plugin_cfg = cfg
            .plugin_config
            .get(entry.as_str())
            .or_else(|| cfg.plugin_config.get(&plugin_host::name_of(&path)))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        match plugin_host::load(&path, &plugin_cfg, cfg.plugin_trust) {
            Ok(p) => {
                tracing::info!(plugin = %p.meta.name, version = %p.meta.version, path = %path.display(), abi = %format!("{}.{}", p.meta.abi_major, p.meta.abi_minor), "plugin loaded");
                loaded.push(p);
            }
            Err(e) if e.disables_only_the_plugin() => {
                let name = match &e {
                    PluginError::Invalid {
                        plugin: Some(n), ..
                    } => n.clone(),
                    _ => plugin_host::name_of(&path),
                };
                tracing::error!(plugin = %name, error = %e, "plugin disabled before loading; tracing goes on with the others");
                refused.push((name, e));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if loaded.is_empty() {
        if let Some((_, e)) = refused.into_iter().next() {
            return Err(e.into());
        }
        return Err(RunError::NoPlugins);
    }
    check_probe_names(&cfg.probes, &loaded)?;
    check_plugin_tables(&cfg, &loaded, &refused, &dirs)?;
    // Before the kernel too: a bad TLS file or endpoint costs nothing.
    let otlp = cfg.otlp.as_ref().map(Otlp::start).transpose()?;

    let btf = KernelBtf::read(cfg.btf.as_deref()).map_err(RunError::Kernel)?;
    let drops = DropReasons::from_btf(&btf).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "drop reasons will be shown as numbers");
        DropReasons::default()
    });
    let mut kfilter = cfg.filter.to_kernel(cfg.sample_n);
    if let Some(o) = cfg.otlp.as_ref().filter(|o| o.exclude_own_traffic) {
        let addrs = endpoint_addrs(&o.endpoint);
        if addrs.is_empty() {
            tracing::warn!(
                endpoint = %o.endpoint,
                "cannot resolve the OTLP endpoint: the agent's own export traffic may show up in journeys"
            );
        }
        let ignored = kfilter.exclude(&addrs);
        let excluded: Vec<String> = addrs
            .iter()
            .filter(|a| !ignored.contains(a))
            .map(|a| a.to_string())
            .collect();
        if !excluded.is_empty() {
            tracing::info!(
                endpoints = %excluded.join(","),
                "not tracing the agent's own export traffic (otlp.exclude_own_traffic = false traces it)"
            );
        }
    }

    let mut summary = Summary {
        kind: "summary",
        ..Default::default()
    };
    for (name, e) in refused {
        let ps = summary.plugins.entry(name).or_default();
        ps.disabled = true;
        ps.disabled_reason = Some(e.to_string());
    }
    let (tx, mut rx) = mpsc::channel::<Batch>(256);
    let mut attached_all = Vec::new();
    // A stop asked for while loading or attaching: attach nothing more, write
    // no ready file, go straight to the orderly shutdown below.
    let mut stop: Option<Stop> = signals.pending().await;
    for p in loaded {
        if stop.is_some() {
            break;
        }
        let attached = probes::load_and_attach(
            &p.meta,
            btf.aya(),
            &kfilter,
            &cfg.packet_id_key,
            &cfg.tunnels,
            cfg.ringbuf_bytes,
            &cfg.probes,
        )?;
        attached_all.push((p, attached));
        stop = signals.pending().await;
    }
    // Only loading and attaching need the BTF: give its memory back.
    drop(btf);
    let output = Output::new(cfg.output, out)
        .map_err(|e| RunError::Io(format!("cannot start the output thread: {e}")))?;
    // A plugin's observation may join a journey by TCP sequence number
    // (journey::join), also one that finished: give it time to be read.
    let seq_joins = attached_all.iter().any(|(p, _)| p.meta.joins_by_tcp_seq);
    let mut stage = Stage {
        builder: Builder::new(cfg.idle_timeout.as_nanos() as u64, cfg.max_in_flight)
            .with_benign_drops(drops.benign())
            .with_seq_joins(if seq_joins { JOIN_LINGER_NS } else { 0 })
            // A ring buffer per plugin: one's drop may be read before
            // another's older hops of the same packet.
            .with_several_rings(attached_all.len() > 1),
        drops,
        summary,
        metas: Vec::new(),
        stats: Vec::new(),
        ebpfs: Vec::new(),
        decoders: Vec::new(),
        watermarks: Vec::new(),
        output,
        otlp,
        places: Places {
            netns: NetnsResolver::default(),
            containers: match &cfg.docker_socket {
                Some(socket) => Containers::docker(socket),
                None => Containers::none(),
            },
        },
        procs: ProcessNames::default(),
        clock: WallClock::measure(),
        done: Vec::new(),
        plugin_metrics: PluginMetrics::new(&[], DEFAULT_MAX_SERIES),
    };
    // Everything attached: start reading, one decoder thread per plugin.
    for (idx, (p, attached)) in attached_all.into_iter().enumerate() {
        let probes::Attached {
            ebpf,
            ringbuf,
            stats: kstats,
            choices,
        } = attached;
        let ps = stage
            .summary
            .plugins
            .entry(p.meta.name.clone())
            .or_default();
        for c in &choices {
            ps.probes.insert(c.probe.clone(), c.to_string());
        }
        stage.metas.push(p.meta.clone());
        // The counters and the programs stay with the loop: the counters
        // readable after a plugin is disabled, the programs detachable
        // whatever its decoder thread is doing.
        stage.stats.push(kstats);
        stage.ebpfs.push(Some(ebpf));
        let name = p.meta.name.clone();
        let decoder = Decoder::spawn(idx as u16, p, ringbuf, tx.clone()).map_err(|e| {
            RunError::Io(format!("cannot start the decoder thread of `{name}`: {e}"))
        })?;
        stage.decoders.push(decoder);
        stage.watermarks.push(0);
    }
    drop(tx);
    // The plugins' declared metrics, exported with the agent's own.
    stage.plugin_metrics = PluginMetrics::new(
        &stage.metas,
        cfg.otlp
            .as_ref()
            .map_or(DEFAULT_MAX_SERIES, |o| o.max_series_per_metric),
    );
    if let Some(meter) = stage.otlp.as_ref().and_then(Otlp::meter) {
        stage.plugin_metrics.export_to(meter, &stage.metas);
    }
    if let Some(s) = stop {
        tracing::info!("{s} before tracing started: stopping");
    } else {
        if let Some(path) = &cfg.ready_file {
            write_ready_file(path, &stage.summary.plugins)?;
        }
        tracing::info!(filter = %cfg.filter_text, sample = %format!("1/{}", cfg.sample_n), "tracing");
        if let Some(ns) = crate::kernel::clock::test_offset_ns() {
            tracing::warn!(
                offset_ns = ns,
                "TEST ONLY: {} shifts every reported time",
                crate::kernel::clock::TEST_OFFSET_ENV
            );
        }
        if cfg.sample_n > 1 && cfg.filter_text.trim().is_empty() {
            tracing::info!(
                "no --filter: keeping one packet in {}; pass --sample 1/1 to keep every packet",
                cfg.sample_n
            );
        }
    }

    // Config bounds the duration (config::MAX_DURATION_SECS); a deadline
    // beyond what an Instant can hold is no deadline at all.
    let deadline = cfg
        .duration
        .and_then(|d| tokio::time::Instant::now().checked_add(d));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clock_refresh = tokio::time::Instant::now();
    let mut health_refresh = tokio::time::Instant::now();

    while stop.is_none() {
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(b) = rx.recv() => stage.batch(b),
            _ = tick.tick() => {
                stage.watchdog();
                stage.expire();
                if health_refresh.elapsed() >= Duration::from_secs(1) {
                    stage.update_health();
                    health_refresh = tokio::time::Instant::now();
                }
                if clock_refresh.elapsed() > Duration::from_secs(10) {
                    stage.clock = WallClock::measure();
                    clock_refresh = tokio::time::Instant::now();
                }
            }
            s = signals.stop() => { tracing::info!("{s}: stopping"); break; }
            _ = sleep_until_deadline => { tracing::info!("duration reached: stopping"); break; }
        }
        stage.emit();
        if stage.output.is_broken() {
            tracing::warn!("output closed: stopping");
            break;
        }
    }

    // Stop the decoders: each drains what is left and says it is finished.
    // One stuck in its plugin is given up on by the watchdog (HANG_TIMEOUT);
    // a second SIGTERM or SIGINT gives up on all of them at once.
    for d in &stage.decoders {
        d.stop();
    }
    let mut tick = tokio::time::interval(TICK);
    while stage.decoders.iter().any(|d| !d.ended) {
        tokio::select! {
            Some(b) = rx.recv() => stage.batch(b),
            _ = tick.tick() => stage.watchdog(),
            s = signals.stop() => {
                tracing::warn!("{s} again: not waiting for the decoders");
                for i in 0..stage.decoders.len() {
                    if !stage.decoders[i].ended {
                        stage.give_up(i, format!("{s} while its decoder was still draining"));
                    }
                }
            }
        }
    }
    // The programs go before the summary: "exited" means "nothing attached".
    stage.ebpfs.clear();
    let Stage {
        mut builder,
        mut summary,
        metas,
        stats,
        mut output,
        mut otlp,
        mut places,
        procs,
        clock,
        drops,
        mut done,
        plugin_metrics,
        ..
    } = stage;
    builder.flush(&mut done);
    emit(
        &mut done,
        &mut Names {
            plugins: &metas,
            drops: &drops,
            netns: &mut places.netns,
            procs: &procs,
            containers: &mut places.containers,
            clock,
        },
        &mut output,
        &mut otlp,
    );

    for (i, (meta, s)) in metas.iter().zip(&stats).enumerate() {
        let per_cpu = s.read_per_cpu();
        let mut totals = StatTotals::default();
        for c in &per_cpu {
            totals += *c;
        }
        let ps = summary.plugins.entry(meta.name.clone()).or_default();
        (ps.metrics, ps.metric_overflow) = plugin_metrics.summary(i);
        ps.kernel = totals;
        ps.kernel_per_cpu = per_cpu;
        summary.kernel += totals;
    }
    summary.events_lost = summary.kernel.lost;
    summary.packets_lost = summary.kernel.lost_packets;
    summary.set_builder(builder.stats());
    // Wait for stdout to take what is queued; what it does not is counted.
    let drained = output.drain(DRAIN_TIMEOUT);
    summary.output_dropped = output.dropped();
    if let Some(o) = otlp.take() {
        o.health().update_from(&summary, summary.kernel);
        let (details, exported) = o.shutdown();
        summary.set_otlp(details, exported);
    }
    if output.summary(&summary, drained, DRAIN_TIMEOUT) == SummaryWritten::Stderr {
        tracing::warn!(
            dropped = summary.output_dropped,
            "stdout did not take the output within {DRAIN_TIMEOUT:?}: the summary line went to stderr"
        );
    }
    if let Some(path) = &cfg.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(summary)
}

/// The loop's state between the decoders and the output: journeys are built
/// here, named, and handed to the output and OTLP.
struct Stage {
    builder: Builder,
    drops: DropReasons,
    summary: Summary,
    metas: Vec<PluginMeta>,
    stats: Vec<KernelStats>,
    /// Each plugin's programs; `None` once disabled (detached).
    ebpfs: Vec<Option<aya::Ebpf>>,
    decoders: Vec<Decoder>,
    /// Per plugin: its events up to this time have all been read.
    watermarks: Vec<u64>,
    output: Output,
    otlp: Option<Otlp>,
    places: Places,
    procs: ProcessNames,
    clock: WallClock,
    done: Vec<Journey>,
    plugin_metrics: PluginMetrics,
}

impl Stage {
    fn batch(&mut self, b: Batch) {
        match b {
            Batch::Observations {
                plugin,
                obs,
                records,
                decode_errors,
                watermark,
            } => {
                // What a thread given up on sends if its call ever returns.
                if self.ebpfs[plugin as usize].is_none() {
                    return;
                }
                let w = &mut self.watermarks[plugin as usize];
                *w = (*w).max(watermark);
                let name = &self.metas[plugin as usize].name;
                self.summary.records += records;
                self.summary.decode_errors += decode_errors;
                if let Some(ps) = self.summary.plugins.get_mut(name) {
                    ps.records += records;
                    ps.decode_errors += decode_errors;
                }
                for o in obs {
                    match o {
                        Observation::Packet(p) => {
                            self.procs.note(p.pid);
                            self.builder.packet(plugin, p, &mut self.done)
                        }
                        Observation::Interval(i) => self.builder.interval(plugin, i),
                        Observation::Metric(m) => self.plugin_metrics.record(plugin as usize, &m),
                        Observation::Connection(c) => {
                            let v = serde_json::json!({
                                "type": "connection", "plugin": name,
                                "src": c.flow.src().map(|a| a.to_string()), "dst": c.flow.dst().map(|a| a.to_string()),
                                "sport": c.flow.sport, "dport": c.flow.dport, "proto": c.flow.proto_name(),
                                "netns": c.netns, "pid": c.pid,
                                "bytes_sent": c.bytes_sent, "bytes_received": c.bytes_received,
                                "packets_sent": c.packets_sent, "packets_received": c.packets_received,
                                "retransmits": c.retransmits, "srtt_us": c.srtt_us, "rttvar_us": c.rttvar_us,
                            });
                            self.output.connection(&v);
                        }
                    }
                }
            }
            Batch::Disabled { plugin, reason } => {
                self.decoders[plugin as usize].ended();
                self.disable(plugin as usize, reason);
            }
            Batch::Watermark { plugin, watermark } => {
                let w = &mut self.watermarks[plugin as usize];
                *w = (*w).max(watermark);
            }
            Batch::Finished { plugin } => self.decoders[plugin as usize].ended(),
        }
    }

    /// End the journeys idle at the watermark: the time up to which every
    /// live plugin's events have been read (journey/mod.rs). With none
    /// live, the clock.
    fn expire(&mut self) {
        let w = self
            .decoders
            .iter()
            .filter(|d| !d.ended)
            .map(|d| self.watermarks[d.plugin as usize])
            .min()
            .unwrap_or_else(monotonic_ns);
        self.builder.expire(w, &mut self.done);
    }

    /// Detach a plugin's programs and mark it disabled in the summary.
    fn disable(&mut self, idx: usize, reason: String) {
        if self.ebpfs[idx].take().is_none() {
            return;
        }
        let name = &self.metas[idx].name;
        tracing::error!(plugin = %name, error = %reason, "plugin disabled, its probes detached; tracing goes on with the others");
        if let Some(ps) = self.summary.plugins.get_mut(name) {
            ps.disabled = true;
            ps.disabled_reason = Some(reason);
        }
    }

    /// Give up on a decoder thread and disable its plugin.
    fn give_up(&mut self, idx: usize, reason: String) {
        self.decoders[idx].abandon();
        self.disable(idx, reason);
    }

    /// Disable the plugins whose decoder call has run for [`HANG_TIMEOUT`].
    fn watchdog(&mut self) {
        let now = std::time::Instant::now();
        for i in 0..self.decoders.len() {
            if let Some(t) = self.decoders[i].stuck_for(now) {
                if t >= HANG_TIMEOUT {
                    self.give_up(
                        i,
                        format!(
                            "decoder hung: one call has not returned for {} ms (limit {} ms)",
                            t.as_millis(),
                            HANG_TIMEOUT.as_millis()
                        ),
                    );
                }
            }
        }
    }

    fn update_health(&mut self) {
        if let Some(o) = &self.otlp {
            self.summary.set_builder(self.builder.stats());
            self.summary.output_dropped = self.output.dropped();
            let mut kernel = StatTotals::default();
            for s in &self.stats {
                kernel += s.read();
            }
            o.health().update_from(&self.summary, kernel);
        }
    }

    /// Name the finished journeys and hand them to the output and OTLP.
    fn emit(&mut self) {
        emit(
            &mut self.done,
            &mut Names {
                plugins: &self.metas,
                drops: &self.drops,
                netns: &mut self.places.netns,
                procs: &self.procs,
                containers: &mut self.places.containers,
                clock: self.clock,
            },
            &mut self.output,
            &mut self.otlp,
        );
    }
}

fn emit(
    done: &mut Vec<Journey>,
    names: &mut Names<'_>,
    output: &mut Output,
    otlp: &mut Option<Otlp>,
) {
    if done.is_empty() {
        return;
    }
    names.netns.new_batch();
    names.containers.new_batch();
    for j in done.drain(..) {
        let view = JourneyView::new(&j, names);
        output.journey(&view);
        if let Some(o) = otlp.as_mut() {
            o.journey(view);
        }
    }
    output.flush();
}

/// Every `[plugin.NAME]` table is for a plugin of this run. A name that no
/// plugin on the search path has is a typo, refused like an unknown key; the
/// table of a plugin that exists but is not loaded now is only unused (a
/// config file shared by runs with different `--plugins`): a warning.
fn check_plugin_tables(
    cfg: &Config,
    loaded: &[LoadedPlugin],
    refused: &[(String, PluginError)],
    dirs: &[PathBuf],
) -> Result<(), RunError> {
    let in_run = |name: &str| {
        cfg.plugins.iter().any(|e| e == name)
            || loaded
                .iter()
                .any(|p| p.meta.name == name || plugin_host::name_of(&p.path) == name)
            || refused.iter().any(|(n, _)| n == name)
    };
    let available = plugin_host::discover(dirs);
    for name in cfg.plugin_config.keys().filter(|n| !in_run(n)) {
        if available.contains_key(name) {
            tracing::warn!(plugin = %name, "config table `[plugin.{name}]` is not used: plugin `{name}` is not loaded in this run (--plugins {})", cfg.plugins.join(","));
        } else {
            return Err(RunError::Config(format!(
                "`[plugin.{name}]`: there is no plugin `{name}` (plugins in this run: {}; on the search path: {})",
                cfg.plugins.join(", "),
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Every probe named in `--probes` is an opt-in probe of a loaded plugin.
/// The socket addresses of an `http(s)://host:port[/path]` endpoint.
fn endpoint_addrs(endpoint: &str) -> Vec<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let (rest, default_port) = match endpoint.split_once("://") {
        Some(("https", r)) => (r, 443),
        Some((_, r)) => (r, 80),
        None => (endpoint, 80),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:{default_port}")
    } else {
        authority.to_string()
    };
    let mut addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

fn check_probe_names(opt_in: &probes::OptIn, loaded: &[LoadedPlugin]) -> Result<(), RunError> {
    let known: Vec<&str> = loaded
        .iter()
        .flat_map(|p| p.meta.probes.iter())
        .filter(|p| p.opt_in)
        .map(|p| p.name.as_str())
        .collect();
    for name in &opt_in.names {
        if !known.contains(&name.as_str()) {
            return Err(RunError::Config(format!(
                "`probes`: `{name}` is not an opt-in probe of the loaded plugins; opt-in probes: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{}, or `all`", known.join(", "))
                }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_addresses() {
        let v = super::endpoint_addrs("http://127.0.0.1:4317");
        assert_eq!(v, vec!["127.0.0.1:4317".parse().unwrap()]);
        let v = super::endpoint_addrs("https://[::1]/v1");
        assert_eq!(v, vec!["[::1]:443".parse().unwrap()]);
        assert!(super::endpoint_addrs("http://no.such.host.invalid:1").is_empty());
    }
}

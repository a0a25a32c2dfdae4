//! The agent's main loop: load plugins, attach their probes, read their ring
//! buffers, build journeys, write them out, and stop cleanly.
//!
//! One thread. Each plugin has a reader task that drains its ring buffer
//! when the kernel signals data, decodes records through the plugin, and
//! sends batches of observations to the builder loop over a bounded channel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use vnt_plugin_api::Observation;

use crate::config::Config;
use crate::containers::Containers;
use crate::export::otlp::{Otlp, OtlpError};
use crate::export::plugin_metrics::{PluginMetrics, DEFAULT_MAX_SERIES};
use crate::export::view::PluginSummary;
use crate::export::{JourneyView, Names, Output, Summary};
use crate::journey::Builder;
use crate::kernel::btf::KernelBtf;
use crate::kernel::clock::{monotonic_ns, WallClock};
use crate::kernel::drop_reason::DropReasons;
use crate::kernel::netns::NetnsResolver;
use crate::kernel::process::ProcessNames;
use crate::plugin_host::{self, DecodeOutcome, LoadedPlugin, PluginError, PluginMeta};
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

/// What reader tasks send to the builder loop.
enum Batch {
    Observations {
        plugin: u16,
        obs: Vec<Observation>,
        records: u64,
        decode_errors: u64,
    },
    Disabled {
        plugin: u16,
        reason: String,
    },
}

const TICK: Duration = Duration::from_millis(10);
const BATCH_MAX: usize = 4096;

/// What names the places hops happen in: network namespaces (their
/// `ip netns` names and owners) and the containers they belong to.
struct Places {
    netns: NetnsResolver,
    containers: Containers,
}

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

/// Drain the ring buffer, decoding each record, in batches.
async fn read_plugin(
    idx: u16,
    mut plugin: LoadedPlugin,
    ebpf: aya::Ebpf,
    ringbuf: aya::maps::RingBuf<aya::maps::MapData>,
    tx: mpsc::Sender<Batch>,
    mut stop: watch::Receiver<bool>,
) {
    let name = plugin.meta.name.clone();
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the `RingBuf` lives, i.e. as long as the `AsyncFd`.
    let registered =
        unsafe { AsyncFd::register_with_interest(ringbuf, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let _ = tx
                .send(Batch::Disabled {
                    plugin: idx,
                    reason: format!("cannot poll the ring buffer: {e}"),
                })
                .await;
            return;
        }
    };
    let mut obs = Vec::with_capacity(BATCH_MAX);
    let mut last_error_logged = false;
    // Programs wake us only when a batch piled up (vnt_submit); the timer
    // drains the rest.
    let mut drain = tokio::time::interval(TICK);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The plugin's own timer (ABI 1.3), for plugins that poll.
    let tick_ms = u64::from(plugin.meta.tick_interval_ms);
    let mut timer = tokio::time::interval(Duration::from_millis(tick_ms.max(1)));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut ticked = false;
        let stopping = tokio::select! {
            r = fd.readable_mut() => match r {
                Ok(mut guard) => { guard.clear_ready(); false }
                Err(_) => true,
            },
            _ = drain.tick() => false,
            _ = timer.tick(), if tick_ms > 0 => { ticked = true; false }
            _ = stop.changed() => true,
        };
        if ticked {
            let mut tick_obs = Vec::new();
            let (outcome, malformed) = plugin.tick(&mut tick_obs).unwrap_or((DecodeOutcome::Ok, 0));
            let disabled = match outcome {
                DecodeOutcome::Panicked(e) => Some(e),
                DecodeOutcome::Error(e) => {
                    tracing::warn!(plugin = %name, error = %e, "timer callback failed");
                    None
                }
                DecodeOutcome::Ok => None,
            };
            let batch = Batch::Observations {
                plugin: idx,
                obs: tick_obs,
                records: 0,
                decode_errors: malformed,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
            if let Some(reason) = disabled {
                tracing::error!(plugin = %name, error = %reason, "plugin timer panicked; plugin disabled, its probes detached; tracing goes on with the others");
                drop(fd);
                drop(ebpf);
                drop(plugin);
                let _ = tx
                    .send(Batch::Disabled {
                        plugin: idx,
                        reason,
                    })
                    .await;
                return;
            }
        }
        // Drain everything available, also once more when stopping.
        loop {
            let mut records = 0u64;
            let mut decode_errors = 0u64;
            let mut disabled = None;
            {
                let rb = fd.get_mut();
                while obs.len() < BATCH_MAX {
                    let Some(item) = rb.next() else { break };
                    records += 1;
                    let (outcome, malformed) = plugin.decode(&item, &mut obs);
                    decode_errors += malformed;
                    match outcome {
                        DecodeOutcome::Ok => {}
                        DecodeOutcome::Error(e) => {
                            decode_errors += 1;
                            if !last_error_logged {
                                tracing::warn!(plugin = %name, error = %e, "decoder rejected a record (counted; further ones only counted)");
                                last_error_logged = true;
                            }
                        }
                        DecodeOutcome::Panicked(e) => {
                            disabled = Some(e);
                            break;
                        }
                    }
                }
            }
            if records == 0 && disabled.is_none() {
                break;
            }
            let batch = Batch::Observations {
                plugin: idx,
                obs: std::mem::replace(&mut obs, Vec::with_capacity(BATCH_MAX)),
                records,
                decode_errors,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
            if let Some(reason) = disabled {
                tracing::error!(plugin = %name, error = %reason, "plugin decoder panicked; plugin disabled, its probes detached; tracing goes on with the others");
                // Detach before reporting, so "disabled" means "no probes attached".
                drop(fd);
                drop(ebpf);
                drop(plugin);
                let _ = tx
                    .send(Batch::Disabled {
                        plugin: idx,
                        reason,
                    })
                    .await;
                return;
            }
        }
        if stopping {
            return;
        }
    }
}

/// How long a finished journey stays open to joins when a plugin joins by
/// TCP sequence number: a few of the readers' drain ticks.
const JOIN_LINGER_NS: u64 = 50_000_000;

/// Run until SIGINT/SIGTERM or `duration`; return the summary. SIGHUP is
/// ignored (crate::signals).
pub async fn run(cfg: Config, out: Box<dyn Write>) -> Result<Summary, RunError> {
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
    let mut otlp = cfg.otlp.as_ref().map(Otlp::start).transpose()?;

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

    let mut metas: Vec<PluginMeta> = Vec::new();
    let mut stats: Vec<KernelStats> = Vec::new();
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
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
            cfg.ringbuf_bytes,
            &cfg.probes,
        )?;
        attached_all.push((p, attached));
        stop = signals.pending().await;
    }
    // Only loading and attaching need the BTF: give its memory back.
    drop(btf);
    // Everything attached: start reading.
    for (idx, (p, attached)) in attached_all.into_iter().enumerate() {
        let probes::Attached {
            ebpf,
            ringbuf,
            stats: kstats,
            choices,
        } = attached;
        let ps = summary.plugins.entry(p.meta.name.clone()).or_default();
        for c in &choices {
            ps.probes.insert(c.probe.clone(), c.to_string());
        }
        metas.push(p.meta.clone());
        // The counters stay with the loop: readable even after a plugin is disabled.
        stats.push(kstats);
        readers.push(tokio::task::spawn_local(read_plugin(
            idx as u16,
            p,
            ebpf,
            ringbuf,
            tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(tx);
    if let Some(s) = stop {
        tracing::info!("{s} before tracing started: stopping");
    } else {
        if let Some(path) = &cfg.ready_file {
            write_ready_file(path, &summary.plugins)?;
        }
        tracing::info!(filter = %cfg.filter_text, sample = %format!("1/{}", cfg.sample_n), "tracing");
        if cfg.sample_n > 1 && cfg.filter_text.trim().is_empty() {
            tracing::info!(
                "no --filter: keeping one packet in {}; pass --sample 1/1 to keep every packet",
                cfg.sample_n
            );
        }
    }

    let mut output = Output::new(cfg.output, out);
    let mut places = Places {
        netns: NetnsResolver::default(),
        containers: match &cfg.docker_socket {
            Some(socket) => Containers::docker(socket),
            None => Containers::none(),
        },
    };
    let mut procs = ProcessNames::default();
    let mut clock = WallClock::measure();
    let mut builder = Builder::new(cfg.idle_timeout.as_nanos() as u64, cfg.max_in_flight)
        .with_benign_drops(drops.benign())
        // A plugin's observation may join a journey by TCP sequence number
        // (journey::join), also one that finished: give it time to be read.
        .with_seq_joins(if metas.iter().any(|m| m.joins_by_tcp_seq) {
            JOIN_LINGER_NS
        } else {
            0
        });
    let mut done = Vec::new();
    let mut plugin_metrics = PluginMetrics::new(
        &metas,
        cfg.otlp
            .as_ref()
            .map_or(DEFAULT_MAX_SERIES, |o| o.max_series_per_metric),
    );
    if let Some(meter) = otlp.as_ref().and_then(Otlp::meter) {
        plugin_metrics.export_to(meter, &metas);
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
    let mut output_broken = false;

    let emit = |done: &mut Vec<_>,
                output: &mut Output,
                otlp: &mut Option<Otlp>,
                places: &mut Places,
                procs: &ProcessNames,
                clock: WallClock,
                metas: &[PluginMeta],
                broken: &mut bool| {
        if done.is_empty() {
            return;
        }
        places.netns.new_batch();
        places.containers.new_batch();
        let mut names = Names {
            plugins: metas,
            drops: &drops,
            netns: &mut places.netns,
            procs,
            containers: &mut places.containers,
            clock,
        };
        for j in done.drain(..) {
            if *broken {
                continue;
            }
            let view = JourneyView::new(&j, &mut names);
            if output.journey(&view).is_err() {
                *broken = true;
            }
            if let Some(o) = otlp.as_mut() {
                o.journey(view);
            }
        }
        if output.flush().is_err() {
            *broken = true;
        }
    };

    let mut channel_open = true;
    while stop.is_none() {
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            b = rx.recv(), if channel_open => match b {
                Some(b) => handle_batch(b, &mut builder, &mut summary, &metas, &mut output, &mut procs, &mut plugin_metrics, &mut done),
                None => channel_open = false,
            },
            _ = tick.tick() => {
                builder.expire(monotonic_ns(), &mut done);
                if let Some(o) = &otlp {
                    if health_refresh.elapsed() >= Duration::from_secs(1) {
                        summary.set_builder(builder.stats());
                        o.health().update_from(&summary, stats.iter().map(|s| s.read().lost).sum());
                        health_refresh = tokio::time::Instant::now();
                    }
                }
                if clock_refresh.elapsed() > Duration::from_secs(10) {
                    clock = WallClock::measure();
                    clock_refresh = tokio::time::Instant::now();
                }
            }
            s = signals.stop() => { tracing::info!("{s}: stopping"); break; }
            _ = sleep_until_deadline => { tracing::info!("duration reached: stopping"); break; }
        }
        emit(
            &mut done,
            &mut output,
            &mut otlp,
            &mut places,
            &procs,
            clock,
            &metas,
            &mut output_broken,
        );
        if output_broken {
            tracing::warn!("output closed: stopping");
            break;
        }
    }

    // Stop readers (they drain what is left and detach), then finish.
    let _ = stop_tx.send(true);
    while let Some(b) = rx.recv().await {
        handle_batch(
            b,
            &mut builder,
            &mut summary,
            &metas,
            &mut output,
            &mut procs,
            &mut plugin_metrics,
            &mut done,
        );
    }
    for r in readers {
        let _ = r.await;
    }
    builder.flush(&mut done);
    emit(
        &mut done,
        &mut output,
        &mut otlp,
        &mut places,
        &procs,
        clock,
        &metas,
        &mut output_broken,
    );

    for (i, (meta, s)) in metas.iter().zip(&stats).enumerate() {
        let totals = s.read();
        let ps = summary.plugins.entry(meta.name.clone()).or_default();
        (ps.metrics, ps.metric_overflow) = plugin_metrics.summary(i);
        ps.kernel = totals;
        summary.kernel += totals;
    }
    summary.events_lost = summary.kernel.lost;
    summary.set_builder(builder.stats());
    if let Some(o) = otlp.take() {
        o.health().update_from(&summary, summary.events_lost);
        let (details, exported) = o.shutdown();
        summary.set_otlp(details, exported);
    }
    if !output_broken {
        let _ = output.summary(&summary);
        let _ = output.flush();
    }
    if let Some(path) = &cfg.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(summary)
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

// The main loop's state, passed piecewise so each borrow stays visible.
#[allow(clippy::too_many_arguments)]
fn handle_batch(
    b: Batch,
    builder: &mut Builder,
    summary: &mut Summary,
    metas: &[PluginMeta],
    output: &mut Output,
    procs: &mut ProcessNames,
    plugin_metrics: &mut PluginMetrics,
    done: &mut Vec<crate::journey::Journey>,
) {
    match b {
        Batch::Observations {
            plugin,
            obs,
            records,
            decode_errors,
        } => {
            let name = &metas[plugin as usize].name;
            summary.records += records;
            summary.decode_errors += decode_errors;
            if let Some(ps) = summary.plugins.get_mut(name) {
                ps.records += records;
                ps.decode_errors += decode_errors;
            }
            let now = monotonic_ns();
            for o in obs {
                match o {
                    Observation::Packet(p) => {
                        procs.note(p.pid);
                        builder.packet(plugin, p, now, done)
                    }
                    Observation::Interval(i) => builder.interval(plugin, i),
                    Observation::Metric(m) => plugin_metrics.record(plugin as usize, &m),
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
                        let _ = output.connection(&v);
                    }
                }
            }
        }
        Batch::Disabled { plugin, reason } => {
            let name = &metas[plugin as usize].name;
            if let Some(ps) = summary.plugins.get_mut(name) {
                ps.disabled = true;
                ps.disabled_reason = Some(reason);
            }
        }
    }
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

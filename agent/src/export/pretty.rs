//! `--output pretty`: a block per journey, readable at a glance.
//!
//! ```text
//! icmp 10.1.2.2 -> 10.1.2.1  84 B  5 hops  21.4us  delivered to ping[812]  trace 3f1c…
//!          +0ns  xmit     vt1c2    tx  netns vt1-c2 (pid 640 sleep)  net:net_dev_start_xmit
//!       +2.10us  receive  vt1h2    rx  netns vt1-h                   net:netif_receive_skb
//!   ...
//!      +15.2us  deliver  -          -  netns vt1-c1 (pid 640 sleep)  skb:skb_copy_datagram_iovec  by ping[812]
//! udp 10.1.2.1:40000 -> 10.1.2.2:9999  92 B  3 hops  8.1us  dropped  trace 9a02…
//!   ...
//!   DROPPED at vt1h1 (netns vt1-h): NETFILTER_DROP (12)
//! ```

use std::io::{self, Write};

use super::view::{JourneyView, ProcessView, Summary};
use crate::containers::ContainerInfo;

/// Human duration: ns, us, ms, s.
pub fn duration(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.2}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn endpoint(addr: &str, port: u16, family: u8) -> String {
    match (family, port) {
        (_, 0) => addr.to_string(),
        (6, p) => format!("[{addr}]:{p}"),
        (_, p) => format!("{addr}:{p}"),
    }
}

fn process(p: &ProcessView) -> String {
    format!("{}[{}]", p.comm.as_deref().unwrap_or("?"), p.pid)
}

/// `container web (3f1c2a9b0e7d)`, with `pod shop/api-7f` where the runtime
/// names one.
fn container(c: &ContainerInfo) -> String {
    let short = c.id.get(..12).unwrap_or(&c.id);
    match (&c.pod, &c.pod_namespace) {
        (Some(p), Some(n)) => format!("container {} ({short}) pod {n}/{p}", c.name),
        (Some(p), None) => format!("container {} ({short}) pod {p}", c.name),
        _ => format!("container {} ({short})", c.name),
    }
}

/// The verdict as a phrase: `delivered to ping[812]`, `forwarded via eth0`.
fn verdict(j: &JourneyView) -> String {
    match (j.end, j.delivered_to) {
        ("delivered", Some("socket")) => match &j.process {
            Some(p) => format!("delivered to {}", process(p)),
            None => "delivered to a socket".into(),
        },
        ("delivered", Some("socket-unread")) => "delivered, freed unread at close".into(),
        ("delivered", _) => "delivered to the local stack".into(),
        ("forwarded", _) => match j.hops.iter().rev().find(|h| h.parent_hook.is_none()) {
            Some(h) => format!("forwarded via {}", h.interface),
            None => "forwarded".into(),
        },
        (end, _) => end.into(),
    }
}

pub fn journey(out: &mut dyn Write, j: &JourneyView) -> io::Result<()> {
    let f = &j.flow;
    let hops = j.hops.iter().filter(|h| h.parent_hook.is_none()).count();
    writeln!(
        out,
        "{} {} -> {}  {} B  {} hops  {}  {}  trace {}",
        f.proto,
        endpoint(&f.src, f.sport, f.family),
        endpoint(&f.dst, f.dport, f.family),
        j.len,
        hops,
        duration(j.duration_ns),
        verdict(j),
        &j.trace_id[..12],
    )?;
    let mut shown: std::collections::HashMap<std::sync::Arc<str>, vnt_plugin_api::Value> =
        std::collections::HashMap::new();
    for h in &j.hops {
        let ns = match (&h.netns_name, &h.netns_owner) {
            (Some(n), Some(o)) => format!(
                "netns {n} (pid {} {})",
                o.pid,
                o.comm.as_deref().unwrap_or("?")
            ),
            (Some(n), None) => format!("netns {n}"),
            (None, Some(o)) => format!(
                "netns {} (pid {} {})",
                h.netns,
                o.pid,
                o.comm.as_deref().unwrap_or("?")
            ),
            (None, None) => format!("netns {}", h.netns),
        };
        let ns = match &h.container {
            Some(c) => format!("{ns} {}", container(c)),
            None => ns,
        };
        let when = if let Some(d) = h.duration_ns {
            format!("  ({})", duration(d))
        } else {
            format!("+{}", duration(h.latency_ns))
        };
        // Substeps indented by how deep they nest (a step of a step).
        let label = if h.depth > 0 {
            format!("{}+ {}", "  ".repeat(usize::from(h.depth) - 1), h.label)
        } else {
            h.label.to_string()
        };
        let who = h
            .process
            .as_ref()
            .map(|p| format!("  by {}", process(p)))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:>12}  {:<8} {:<15} {:<2}  {:<40} {}{who}",
            when,
            label,
            if h.interface.is_empty() {
                "-"
            } else {
                &h.interface
            },
            h.direction,
            ns,
            h.hook
        )?;
        // A plugin's attributes under its hop, each only where its value
        // changes along the journey (TCP flags stay the same hop to hop).
        let mut line = String::new();
        for (k, v) in &h.attrs.0 {
            if shown.get(k) != Some(v) {
                line.push_str(&format!(" {k}={v}"));
                shown.insert(k.clone(), v.clone());
            }
        }
        if !line.is_empty() {
            writeln!(out, "  {:>12} {line}", "")?;
        }
        if let Some(d) = &h.drop {
            writeln!(
                out,
                "  DROPPED at {} ({ns}): {} ({})",
                h.interface, d.reason, d.code
            )?;
        }
    }
    for i in &j.cpu_intervals {
        writeln!(
            out,
            "  cpu{} {} for {} ({}, detail {})",
            i.cpu,
            i.hook,
            duration(i.duration_ns),
            i.plugin,
            i.detail
        )?;
    }
    Ok(())
}

pub fn summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "vnt-agent: {} journeys ({} delivered, {} forwarded, {} dropped, {} unknown; {} evicted early), {} observations, {} records, {} lost in the kernel, {} decode errors",
        s.journeys, s.journeys_delivered, s.journeys_forwarded, s.journeys_dropped, s.journeys_unknown, s.journeys_evicted, s.observations, s.records, s.events_lost, s.decode_errors
    )?;
    if let Some(o) = &s.otlp {
        writeln!(
            out,
            "  otlp {} ({}): {} spans exported, {} dropped ({} queue full, {} export failed, {} at shutdown), {} metric exports ({} failed)",
            o.endpoint,
            o.protocol,
            s.spans_exported,
            s.spans_dropped,
            o.spans_dropped_queue_full,
            o.spans_dropped_export_failed,
            o.spans_dropped_shutdown,
            o.metric_exports,
            o.metric_export_errors
        )?;
    }
    for (name, p) in &s.plugins {
        let probes: Vec<String> = p.probes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "  {name}: seen {} filtered {} unsampled {} emitted {} lost {} not-ip {}; probes {}{}",
            p.kernel.seen,
            p.kernel.filtered,
            p.kernel.unsampled,
            p.kernel.emitted,
            p.kernel.lost,
            p.kernel.not_ip,
            probes.join(" "),
            p.disabled_reason
                .as_ref()
                .map(|r| format!("; DISABLED: {r}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_read_with_their_pods() {
        let mut c = ContainerInfo {
            id: "3f1c2a9b0e7d55aa".into(),
            name: "web".into(),
            pod: None,
            pod_namespace: None,
        };
        assert_eq!(container(&c), "container web (3f1c2a9b0e7d)");
        c.pod = Some("api-7f".into());
        c.pod_namespace = Some("shop".into());
        assert_eq!(
            container(&c),
            "container web (3f1c2a9b0e7d) pod shop/api-7f"
        );
        c.id = "ab".into();
        c.pod_namespace = None;
        assert_eq!(container(&c), "container web (ab) pod api-7f");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(0), "0ns");
        assert_eq!(duration(1500), "1.50us");
        assert_eq!(duration(2_500_000), "2.50ms");
        assert_eq!(duration(3_000_000_000), "3.00s");
    }
}

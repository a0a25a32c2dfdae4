//! Issue #14, least privilege: the agent runs the Docker scenario (pings
//! between two containers on Docker's bridge, journeys delivered, each hop
//! named after its container) holding exactly one documented capability set
//! (`vnt_tests::privileges`, README "Privileges"), run through `capsh`; and
//! with any one capability of a set removed, it refuses to start with exit
//! code 4 and a message naming that capability and what it is needed for.
//!
//! Privileged (root, eBPF, dockerd); fails, never skips. The engine, image and
//! containers are this process's own and removed even when it fails.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use vnt_tests::docker::{check_container_names, Container, Engine, Image};
use vnt_tests::privileges::{self, effective_of, mask_of, LEGACY, MODERN};
use vnt_tests::verdicts::check_answered_pings;
use vnt_tests::Agent;

const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn the_docker_scenario_passes_with_exactly_each_documented_capability_set() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let _engine = Engine::ensure().context("a Docker engine must run for this test")?;
    let id = std::process::id();
    let image = Image::busybox(&format!("vnt-test-busybox-caps:{id}"), &[])?;
    let a = Container::run(&image, &format!("vnt-test-{id}-caps-a"), &["sleep", "300"])?;
    let b = Container::run(&image, &format!("vnt-test-{id}-caps-b"), &["sleep", "300"])?;
    for set in [MODERN, LEGACY] {
        let agent = Agent::builder()
            .default_probes()
            .filter(format!("host {}", b.ip))
            .capabilities(set)
            .start()
            .with_context(|| format!("the agent with exactly {set:?}"))?;
        let pid = agent.pid().context("agent pid")?;
        let held = effective_of(pid)?;
        ensure!(
            held == mask_of(set)?,
            "the agent must hold exactly {set:?}: CapEff {held:016x}, expected {:016x}",
            mask_of(set)?
        );
        a.sh(&format!("ping -q -c 3 -i 0.2 -W 2 {}", b.ip))
            .context("ping from A to B")?;
        std::thread::sleep(SETTLE);
        let out = agent.stop()?;
        let (icmp, _replies) = check_answered_pings(&out, a.ip, b.ip)
            .with_context(|| format!("with exactly {set:?}"))?;
        let named = check_container_names(&icmp, &[&a, &b])
            .with_context(|| format!("with exactly {set:?}"))?;
        eprintln!(
            "with exactly {set:?}: {} ICMP journeys, {named} hops named after their container",
            icmp.len()
        );
    }
    Ok(())
}

#[test]
fn without_one_capability_of_a_set_the_agent_names_it() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let bin = vnt_tests::locate_binary("vnt-agent", "VNT_AGENT_BIN");
    for set in [MODERN, LEGACY] {
        for removed in set.iter() {
            let rest: Vec<&str> = set.iter().copied().filter(|c| c != removed).collect();
            let out = privileges::with_only(
                &rest,
                &bin,
                ["--plugins", "veth", "--duration", "1", "--output", "json"],
            )?
            .env("VNT_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .context("failed to run the agent through capsh")?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(4),
                "without {removed} (holding {rest:?}) the agent must exit with 4, not {}:\n{err}",
                out.status
            );
            // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON: taking
            // it from the legacy set leaves nothing to load with, and the
            // agent names what this kernel's set lacks.
            let named: Vec<&str> = if *removed == "CAP_SYS_ADMIN" {
                vec!["CAP_BPF", "CAP_PERFMON"]
            } else {
                vec![removed]
            };
            for cap in named {
                ensure!(
                    err.contains(&format!("{cap} (needed ")),
                    "without {removed} the message must name {cap} and why it is needed:\n{err}"
                );
            }
            ensure!(
                err.contains(&MODERN.join(" ")) && err.contains(&LEGACY.join(" ")),
                "the message must list the documented sets {MODERN:?} and {LEGACY:?}:\n{err}"
            );
            ensure!(!err.contains("panicked"), "{err}");
        }
    }
    Ok(())
}

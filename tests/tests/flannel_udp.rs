//! Issue 12, acceptance 2: two "hosts" joined by flannel's UDP backend (a
//! TUN device per host and a forwarder, `vnt-tun-forwarder`, that carries
//! each packet as a UDP datagram to port 8285), one agent per host with the
//! veth and flannel plugins, both exporting to one Jaeger: each datagram
//! from pod A to pod B is one trace, the outer datagram nested in the
//! encapsulation on A and in the decapsulation on B.
//!
//! Privileged (real eBPF, namespaces); Jaeger as in otel_jaeger.rs.

use anyhow::Result;
use std::path::Path;
use vnt_tests::flannel::scenario::{one_trace_per_packet, Setup};
use vnt_tests::flannel::Flannel;
use vnt_tests::Traffic;

#[test]
fn one_trace_per_packet_through_the_udp_overlay() -> Result<()> {
    let _serial = vnt_tests::serial();
    vnt_tests::require_root();
    let s = Setup::new(
        Flannel::udp(Path::new(env!("CARGO_BIN_EXE_vnt-tun-forwarder")))?,
        Traffic::new(env!("CARGO_BIN_EXE_vnt-traffic")),
    )?;
    one_trace_per_packet(&s, 50)
}

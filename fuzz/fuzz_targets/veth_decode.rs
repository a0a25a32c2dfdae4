//! The veth plugin's decoder, as the agent calls it: any record decodes to
//! observations or an error, never a panic, and only known hooks pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnt_plugin_api::{HostLog, InitContext, Observation, Plugin};
use vnt_plugin_veth::{hook, Veth};

fuzz_target!(|data: &[u8]| {
    let mut veth = Veth::new(InitContext {
        config: serde_json::Value::Null,
        log: HostLog::discard(),
    })
    .expect("veth initialises without config");
    let mut out = Vec::new();
    if veth.decode(data, &mut |o| out.push(o.clone())).is_ok() {
        assert_eq!(out.len(), 1, "one record, one observation");
        let Observation::Packet(p) = &out[0] else {
            panic!("veth emits packet observations only");
        };
        assert!(
            (hook::XMIT..=hook::DELIVER).contains(&p.hook),
            "unknown hook {} passed",
            p.hook
        );
    }
});

//! `vnt_plugin_api::wire`: any bytes a ring buffer could hand over decode
//! to a record or to an error, never a panic; a record that decodes keeps
//! the fields it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnt_plugin_api::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(hdr) = wire::header(data) else {
        return;
    };
    for terminal in [false, true] {
        if let Ok(p) = wire::packet(data, terminal) {
            assert_eq!(p.hook, hdr.hook);
            assert_eq!(p.ts_ns, hdr.ts_ns);
            assert_eq!(p.cpu, hdr.cpu);
            assert!(p.terminal || !terminal);
            assert_eq!(p.drop_reason.is_some(), hdr.kind == wire::kind::DROP);
            let _ = p.ifname.to_str();
        }
    }
});

//! `--filter` expressions: any text parses or is refused with an error,
//! never a panic. What parses fits the kernel's `struct vnt_filter`, and
//! parsing is insensitive to extra whitespace. Inputs are also built from
//! the grammar's own words, so the fuzzer reaches deep into it quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnt_agent::probes::filter::{FilterSpec, MAX_NETNS};

const WORDS: &[&str] = &[
    "host",
    "src",
    "dst",
    "port",
    "sport",
    "dport",
    "proto",
    "ip",
    "ip6",
    "dev",
    "netns",
    "and",
    "&&",
    "or",
    "not",
    "(",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "17",
    "0",
    "65535",
    "65536",
    "10.0.0.1",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "fd00::/8",
    "::1",
    "fd00::1/129",
    "veth0",
    "averyveryverylongname",
    "1,2",
    "1,2,3,4,5,6,7,8,9",
    "4026531840",
    "",
];

fn check(expr: &str) {
    let Ok(f) = FilterSpec::parse(expr) else {
        return;
    };
    let k = f.to_kernel(1);
    assert!(k.netns().len() <= MAX_NETNS);
    if let Some(dev) = k.dev() {
        assert!(!dev.is_empty() && dev.len() <= 15, "dev {dev:?}");
    }
    let spaced = expr.split_whitespace().collect::<Vec<_>>().join("   ");
    assert_eq!(
        FilterSpec::parse(&spaced),
        Ok(f),
        "whitespace changed {expr:?}"
    );
}

/// The fuzzer's bytes as words: a byte below `WORDS.len()` is that word;
/// another starts a made-up token of up to 31 characters from the
/// alphabet of addresses, numbers and interface names.
fn tokens(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefv.:/,-";
    let mut out: Vec<String> = Vec::new();
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if (b as usize) < WORDS.len() {
            out.push(WORDS[b as usize].to_string());
        } else {
            let n = (b as usize) % 32;
            let tok: String = it
                .by_ref()
                .take(n)
                .map(|c| ALPHABET[*c as usize % ALPHABET.len()] as char)
                .collect();
            out.push(tok);
        }
    }
    out.join(" ")
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    check(&tokens(data));
});

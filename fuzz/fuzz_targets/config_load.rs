//! The configuration loader on any TOML file: a config or an error naming
//! what is wrong, never a panic; and whatever loads respects every bound
//! (issue 13: sizes have upper bounds).
#![no_main]

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use libfuzzer_sys::fuzz_target;
use vnt_agent::config::{Config, RawConfig, MAX_DURATION_SECS, MAX_IN_FLIGHT, MAX_RINGBUF_BYTES};

const KEYS: &[&str] = &[
    "sample = \"1/0\"\n",
    "sample = \"1/4294967295\"\n",
    "duration = 31536001\n",
    "filter = \"port 53 and proto udp\"\n",
    "[journey]\nmax_in_flight = 1048577\n",
    "[journey]\nidle_timeout_ms = 0\n",
    "[ringbuf]\nbytes = 2147483648\n",
    "[ringbuf]\nbytes = 4096\n",
    "[packet_id]\nkey = \"00112233445566778899aabbccddeeff\"\n",
    "[otlp]\nendpoint = \"http://x:1\"\nqueue_spans = 0\n",
    "[otlp]\nheaders = \"a=%zz\"\n",
    "[plugin.veth]\nx = 1\n",
];

fn check(text: &str) {
    let fig = Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(text));
    let Ok(c) = Config::from_figment(&fig) else {
        return;
    };
    assert!(c.ringbuf_bytes.is_power_of_two() && c.ringbuf_bytes <= MAX_RINGBUF_BYTES);
    assert!((1..=MAX_IN_FLIGHT).contains(&c.max_in_flight));
    assert!(c.duration.is_none_or(|d| d.as_secs() <= MAX_DURATION_SECS));
    assert!(c.sample_n >= 1);
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    // A few known keys stitched together, then the fuzzer's bytes.
    let mut text: String = data
        .iter()
        .take(3)
        .map(|b| KEYS[*b as usize % KEYS.len()])
        .collect();
    text.push_str(&String::from_utf8_lossy(data.get(3..).unwrap_or_default()));
    check(&text);
});

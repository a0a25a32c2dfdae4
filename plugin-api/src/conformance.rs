//! The conformance kit: what every plugin's own tests call, so a plugin
//! that loads in the agent is one the agent can use.
//!
//! ```text
//! #[test]
//! fn conforms() {
//!     let rec: Vec<u8> = sample_record();
//!     vnt_plugin_api::conformance::check::<MyPlugin>(&[&rec]).unwrap();
//! }
//! ```
//!
//! It checks that:
//! - `info()` is sane: a name, unique probe names and hook ids, at least
//!   one alternative per probe;
//! - every alternative's program is in the eBPF object, in the ELF section
//!   its kind and target call for (`tp_btf/<tracepoint>`, `raw_tp/...`,
//!   `fentry/<function>`, `kprobe/<function>`, `tracepoint/<cat>/<name>`,
//!   `tc*` or `classifier*`, `uprobe*`/`usdt*`): the C section name and the
//!   Rust table say the same thing;
//! - declared fields and metrics follow the host's rules
//!   ([`crate::declare`]);
//! - decoding never panics: not on the given sample records, their every
//!   truncation and byte flip, nor on thousands of arbitrary records; and
//!   everything decoded fits the declarations (field ids and kinds, metric
//!   ids).

use std::panic::{catch_unwind, AssertUnwindSafe};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::declare::{self, DeclaredField, DeclaredMetric};
use crate::{
    Cardinality, HookKind, HostLog, InitContext, Observation, Plugin, PluginInfo, ProbeAlternative,
};

/// Arbitrary records tried after the samples.
const RANDOM_RECORDS: usize = 4096;

/// Run every check on `P`; `samples` are valid records of its probes (the
/// more kinds covered, the deeper the byte flips reach). The error lists
/// every failure.
pub fn check<P: Plugin>(samples: &[&[u8]]) -> Result<(), String> {
    let info = catch_unwind(P::info).map_err(|_| "info() panicked".to_string())?;
    let mut errors = Vec::new();
    check_info(&info, &mut errors);
    check_object(&info, &mut errors);
    check_decode::<P>(&info, samples, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "plugin `{}` fails the conformance kit:\n  - {}",
            info.name,
            errors.join("\n  - ")
        ))
    }
}

fn check_info(info: &PluginInfo, errors: &mut Vec<String>) {
    if info.name.is_empty() {
        errors.push("info().name is empty".into());
    }
    for (i, p) in info.probes.iter().enumerate() {
        if info.probes[..i].iter().any(|q| q.name == p.name) {
            errors.push(format!("probe `{}` is declared twice", p.name));
        }
        if p.alternatives.is_empty() {
            errors.push(format!("probe `{}` has no alternative", p.name));
        }
    }
    for (i, h) in info.hooks.iter().enumerate() {
        if info.hooks[..i].iter().any(|g| g.id == h.id) {
            errors.push(format!("hook id {} is declared twice", h.id));
        }
        if h.label.is_empty() {
            errors.push(format!("hook {} has no label", h.id));
        }
    }
    let fields: Vec<DeclaredField<'_>> = info
        .fields
        .iter()
        .map(|f| DeclaredField {
            name: f.name,
            otel_key: f.otel_key,
            low_cardinality: f.cardinality == Cardinality::Low,
        })
        .collect();
    let metrics: Vec<DeclaredMetric<'_>> = info
        .metrics
        .iter()
        .map(|m| DeclaredMetric {
            name: m.name,
            labels: m.labels,
            buckets: m.buckets,
        })
        .collect();
    if let Err(e) = declare::check(&fields, &metrics) {
        errors.push(e);
    }
}

/// Whether ELF section `section` is where an alternative of this kind and
/// target belongs.
fn section_fits(a: &ProbeAlternative, section: &str) -> bool {
    match a.kind {
        HookKind::TpBtf => section == format!("tp_btf/{}", a.target),
        HookKind::RawTp => {
            section == format!("raw_tp/{}", a.target)
                || section == format!("raw_tracepoint/{}", a.target)
        }
        HookKind::FEntry => section == format!("fentry/{}", a.target),
        // `MODULE:function`: the section names the function alone.
        HookKind::KProbe => crate::KProbeTarget::parse(a.target)
            .is_ok_and(|t| section == format!("kprobe/{}", t.function)),
        HookKind::TracePoint => section == format!("tracepoint/{}", a.target.replacen(':', "/", 1)),
        HookKind::Tc => section.starts_with("tc") || section.starts_with("classifier"),
        HookKind::UProbe => section.starts_with("uprobe") || section.starts_with("usdt"),
    }
}

fn check_object(info: &PluginInfo, errors: &mut Vec<String>) {
    let file = match object::File::parse(info.bpf_object) {
        Ok(f) => f,
        Err(e) => {
            errors.push(format!("the eBPF object is not an ELF file: {e}"));
            return;
        }
    };
    // Program name -> its section's name.
    let programs: Vec<(String, String)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter_map(|s| {
            let name = s.name().ok()?.to_string();
            let section = file.section_by_index(s.section_index()?).ok()?;
            Some((name, section.name().ok()?.to_string()))
        })
        .collect();
    for p in info.probes {
        for a in p.alternatives {
            match programs.iter().find(|(n, _)| n == a.program) {
                None => errors.push(format!(
                    "probe `{}`: program `{}` is not in the eBPF object",
                    p.name, a.program
                )),
                Some((_, section)) if !section_fits(a, section) => errors.push(format!(
                    "probe `{}`: program `{}` is in section `{section}`, which does not \
                     attach as {} to `{}`",
                    p.name, a.program, a.kind, a.target
                )),
                Some(_) => {}
            }
        }
    }
}

/// A small deterministic generator: the same records on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_decode<P: Plugin>(info: &PluginInfo, samples: &[&[u8]], errors: &mut Vec<String>) {
    let mut plugin = match catch_unwind(|| {
        P::new(InitContext {
            config: serde_json::Value::Null,
            log: HostLog::discard(),
        })
    }) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            errors.push(format!("new() without configuration failed: {e}"));
            return;
        }
        Err(_) => {
            errors.push("new() panicked".into());
            return;
        }
    };
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for s in samples {
        records.push(s.to_vec());
        for n in 0..s.len() {
            records.push(s[..n].to_vec());
        }
        for i in 0..s.len() {
            let mut r = s.to_vec();
            r[i] ^= (rng.next() as u8) | 1;
            records.push(r);
        }
    }
    for _ in 0..RANDOM_RECORDS {
        let len = (rng.next() % 512) as usize;
        records.push((0..len).map(|_| rng.next() as u8).collect());
    }
    let mut misfits = Vec::new();
    for r in &records {
        let mut out: Vec<Observation> = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            plugin.decode(r, &mut |o| out.push(o.clone()))
        }));
        if result.is_err() {
            errors.push(format!(
                "decode panicked on a record of {} bytes: {:02x?}",
                r.len(),
                &r[..r.len().min(64)]
            ));
            return;
        }
        for o in &out {
            if let Err(e) = fits(info, o) {
                misfits.push(e);
            }
        }
    }
    let tick = catch_unwind(AssertUnwindSafe(|| plugin.tick(&mut |_| {})));
    if tick.is_err() {
        errors.push("tick() panicked".into());
    }
    if let Some(e) = misfits.first() {
        errors.push(format!(
            "{} decoded observations do not fit the declarations, e.g.: {e}",
            misfits.len()
        ));
    }
}

/// The host's own check ([`crate::declare`] for values).
fn fits(info: &PluginInfo, o: &Observation) -> Result<(), String> {
    declare::check_observation(
        o,
        |id| info.fields.get(usize::from(id)).map(|f| (f.name, f.kind)),
        info.metrics.len(),
    )
}

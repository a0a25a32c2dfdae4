//! The plugin side of the boundary: turns a [`Plugin`] impl into the
//! `#[repr(C)]` table and `extern "C"` functions the host calls. All of the
//! plugin side's `unsafe` is in this file.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use crate::abi::{self, Status};
use crate::observation::Observation;
use crate::plugin::{HostLog, InitContext, Plugin};

/// The exported table and the arrays it points into. Built once per library
/// (see `export_plugin!`) and never mutated, so sharing it is sound.
#[derive(Debug)]
pub struct Exported {
    table: abi::PluginTable,
    _probes: Vec<abi::Probe>,
    _alternatives: Vec<Vec<abi::ProbeAlternative>>,
    _hooks: Vec<abi::Hook>,
    _fields: Vec<abi::FieldSpec>,
    _metrics: Vec<abi::MetricSpec>,
}

// SAFETY: `Exported` is immutable after `build_table`; its raw pointers point
// into its own heap arrays and into `'static` data, which are never freed
// while the library is loaded.
unsafe impl Send for Exported {}
// SAFETY: as above, nothing is written through these pointers after build.
unsafe impl Sync for Exported {}

impl Exported {
    /// Pointer handed to the host.
    pub fn table(&self) -> *const abi::PluginTable {
        &self.table
    }
}

/// Build the table for `P`. Called once by the code `export_plugin!` expands to.
pub fn build_table<P: Plugin>() -> Exported {
    let info = P::info();
    let alternatives: Vec<Vec<abi::ProbeAlternative>> = info
        .probes
        .iter()
        .map(|p| {
            p.alternatives
                .iter()
                .map(|a| abi::ProbeAlternative {
                    kind: a.kind.to_raw(),
                    program: abi::Str::new(a.program),
                    target: abi::Str::new(a.target),
                })
                .collect()
        })
        .collect();
    let probes: Vec<abi::Probe> = info
        .probes
        .iter()
        .zip(&alternatives)
        .map(|(p, alts)| abi::Probe {
            name: abi::Str::new(p.name),
            flags: if p.required {
                abi::probe_flags::REQUIRED
            } else {
                0
            } | if p.opt_in {
                abi::probe_flags::OPT_IN
            } else {
                0
            },
            alternatives: alts.as_ptr(),
            alternatives_len: alts.len(),
        })
        .collect();
    let hooks: Vec<abi::Hook> = info
        .hooks
        .iter()
        .map(|h| abi::Hook {
            id: h.id,
            flags: if h.terminal {
                abi::hook_flags::TERMINAL
            } else {
                0
            },
            name: abi::Str::new(h.name),
            label: abi::Str::new(h.label),
        })
        .collect();
    let fields: Vec<abi::FieldSpec> = info
        .fields
        .iter()
        .map(|f| abi::FieldSpec {
            name: abi::Str::new(f.name),
            unit: abi::Str::new(f.unit),
            otel_key: abi::Str::new(f.otel_key),
            description: abi::Str::new(f.description),
            kind: f.kind.to_raw(),
            cardinality: match f.cardinality {
                crate::Cardinality::Low => abi::cardinality::LOW,
                crate::Cardinality::High => abi::cardinality::HIGH,
            },
            _reserved: [0; 6],
        })
        .collect();
    let metrics: Vec<abi::MetricSpec> = info
        .metrics
        .iter()
        .map(|m| abi::MetricSpec {
            name: abi::Str::new(m.name),
            unit: abi::Str::new(m.unit),
            description: abi::Str::new(m.description),
            kind: m.kind.to_raw(),
            _reserved: [0; 7],
            labels: m.labels.as_ptr(),
            labels_len: m.labels.len(),
            buckets: m.buckets.as_ptr(),
            buckets_len: m.buckets.len(),
        })
        .collect();
    Exported {
        table: abi::PluginTable {
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            struct_size: std::mem::size_of::<abi::PluginTable>() as u32,
            name: abi::Str::new(info.name),
            version: abi::Str::new(info.version),
            description: abi::Str::new(info.description),
            bpf_object: abi::Bytes::new(info.bpf_object),
            probes: probes.as_ptr(),
            probes_len: probes.len(),
            hooks: hooks.as_ptr(),
            hooks_len: hooks.len(),
            create: create::<P>,
            decode: decode::<P>,
            destroy: destroy::<P>,
            last_error: last_error::<P>,
            probe_size: std::mem::size_of::<abi::Probe>() as u32,
            alternative_size: std::mem::size_of::<abi::ProbeAlternative>() as u32,
            hook_size: std::mem::size_of::<abi::Hook>() as u32,
            flags: if P::TEST_FIXTURE {
                abi::plugin_flags::TEST_FIXTURE
            } else {
                0
            } | if info.joins_by_tcp_seq {
                abi::plugin_flags::JOINS_BY_TCP_SEQ
            } else {
                0
            },
            fields: fields.as_ptr(),
            fields_len: fields.len(),
            metrics: metrics.as_ptr(),
            metrics_len: metrics.len(),
            field_size: std::mem::size_of::<abi::FieldSpec>() as u32,
            metric_size: std::mem::size_of::<abi::MetricSpec>() as u32,
            tick: (info.tick_interval_ms > 0).then_some(tick::<P> as _),
            tick_interval_ms: info.tick_interval_ms,
            _reserved: 0,
        },
        _probes: probes,
        _alternatives: alternatives,
        _hooks: hooks,
        _fields: fields,
        _metrics: metrics,
    }
}

/// Why the last call of the entry symbol returned null (building the table
/// panicked), for [`crate::ENTRY_ERROR_SYMBOL`].
static ENTRY_ERROR: Mutex<String> = Mutex::new(String::new());

/// The entry symbol's body (see `export_plugin!`): the table, built once, or
/// null when building it panicked (in `P::info()`, say). A panic must not
/// unwind into the host, which is not Rust and cannot catch it.
pub fn entry<P: Plugin>(table: &'static OnceLock<Exported>) -> *const abi::PluginTable {
    match catch_unwind(AssertUnwindSafe(|| {
        table.get_or_init(build_table::<P>).table()
    })) {
        Ok(t) => t,
        Err(payload) => {
            let msg = format!(
                "building the plugin table {}",
                panic_message(payload.as_ref())
            );
            if let Ok(mut e) = ENTRY_ERROR.lock() {
                *e = msg;
            }
            std::ptr::null()
        }
    }
}

/// The entry-error symbol's body: why the entry symbol returned null.
pub fn entry_error() -> abi::Str {
    // Rare (once, at load): a small leak keeps the string valid without a lock
    // held across the boundary.
    match catch_unwind(|| match ENTRY_ERROR.lock() {
        Ok(e) => abi::Str::new(leak_copy(&e)),
        Err(_) => abi::Str::new("the plugin panicked while building its table"),
    }) {
        Ok(s) => s,
        Err(_) => abi::Str::EMPTY,
    }
}

/// One live plugin instance and its last error message.
struct Instance<P> {
    plugin: P,
    last_error: String,
}

/// Error of the last failed `create`, returned by `last_error(null)`.
static CREATE_ERROR: Mutex<String> = Mutex::new(String::new());

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

fn set_create_error(msg: String) {
    if let Ok(mut e) = CREATE_ERROR.lock() {
        *e = msg;
    }
}

// Called by the host only: `config` readable for its length, `host` null or
// valid for the instance's life, `out` writable.
extern "C" fn create<P: Plugin>(
    config: abi::Bytes,
    host: *const abi::Host,
    out: *mut *mut c_void,
) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if out.is_null() {
            return Err((Status::Error, "create: null output pointer".to_string()));
        }
        let json = if config.len == 0 || config.ptr.is_null() {
            serde_json::Value::Null
        } else {
            // SAFETY: the host passes a pointer/length pair to bytes it owns
            // for the duration of this call.
            let bytes = unsafe { std::slice::from_raw_parts(config.ptr, config.len) };
            serde_json::from_slice(bytes).map_err(|e| {
                (
                    Status::Error,
                    format!("plugin config is not valid JSON: {e}"),
                )
            })?
        };
        let log = if host.is_null() {
            HostLog::discard()
        } else {
            // SAFETY: non-null `host` points to a `Host` the host keeps alive
            // for the instance's lifetime.
            let h = unsafe { &*host };
            HostLog {
                ctx: h.ctx,
                log: Some(h.log),
            }
        };
        let plugin = P::new(InitContext { config: json, log }).map_err(|e| (Status::Error, e.0))?;
        let inst = Box::new(Instance {
            plugin,
            last_error: String::new(),
        });
        // SAFETY: `out` was checked non-null and the host provides a writable slot.
        unsafe { *out = Box::into_raw(inst).cast() };
        Ok(())
    }));
    match result {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err((status, msg))) => {
            set_create_error(msg);
            status as i32
        }
        Err(payload) => {
            set_create_error(panic_message(payload.as_ref()));
            Status::Panicked as i32
        }
    }
}

extern "C" fn decode<P: Plugin>(
    instance: *mut c_void,
    record: abi::Bytes,
    sink: *const abi::Sink,
) -> i32 {
    if instance.is_null() || sink.is_null() {
        return Status::Error as i32;
    }
    // SAFETY: `instance` came from `create::<P>` and the host serialises calls
    // on one instance, so this is the only live reference.
    let inst = unsafe { &mut *instance.cast::<Instance<P>>() };
    // SAFETY: the host keeps `sink` valid for this call.
    let sink = unsafe { *sink };
    let bytes = if record.len == 0 || record.ptr.is_null() {
        &[][..]
    } else {
        // SAFETY: the host passes a record it owns for the duration of this call.
        unsafe { std::slice::from_raw_parts(record.ptr, record.len) }
    };
    let plugin = &mut inst.plugin;
    let result = catch_unwind(AssertUnwindSafe(|| {
        plugin.decode(bytes, &mut |o: &Observation| emit_to(&sink, o))
    }));
    status_of(inst, result)
}

/// Hand one observation to the host: its flat form, with its values
/// pointing into `o` for the duration of the call (up to 8 values from the
/// stack: a hop's few attributes cost no allocation).
fn emit_to(sink: &abi::Sink, o: &Observation) {
    let mut raw = abi::Observation::from(o);
    let values = crate::observation::values_of(o);
    const INLINE: usize = 8;
    if values.is_empty() {
        (sink.emit)(sink.ctx, &raw);
    } else if values.len() <= INLINE {
        let mut buf = [abi::FieldValue {
            field: 0,
            kind: 0,
            _reserved: [0; 5],
            num: 0,
            text: abi::Str::EMPTY,
        }; INLINE];
        for (b, v) in buf.iter_mut().zip(values) {
            *b = crate::observation::flat_value(v);
        }
        raw.values = buf.as_ptr();
        raw.values_len = values.len();
        (sink.emit)(sink.ctx, &raw);
    } else {
        let flat: Vec<abi::FieldValue> =
            values.iter().map(crate::observation::flat_value).collect();
        raw.values = flat.as_ptr();
        raw.values_len = flat.len();
        (sink.emit)(sink.ctx, &raw);
    }
}

extern "C" fn tick<P: Plugin>(instance: *mut c_void, sink: *const abi::Sink) -> i32 {
    if instance.is_null() || sink.is_null() {
        return Status::Error as i32;
    }
    // SAFETY: as in `decode`: our instance, calls serialised by the host.
    let inst = unsafe { &mut *instance.cast::<Instance<P>>() };
    // SAFETY: the host keeps `sink` valid for this call.
    let sink = unsafe { *sink };
    let plugin = &mut inst.plugin;
    let result = catch_unwind(AssertUnwindSafe(|| {
        plugin.tick(&mut |o: &Observation| emit_to(&sink, o))
    }));
    status_of(inst, result)
}

fn status_of<P>(
    inst: &mut Instance<P>,
    result: std::thread::Result<Result<(), crate::DecodeError>>,
) -> i32 {
    match result {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err(e)) => {
            inst.last_error = e.0;
            Status::Error as i32
        }
        Err(payload) => {
            inst.last_error = panic_message(payload.as_ref());
            Status::Panicked as i32
        }
    }
}

extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `Box::into_raw` in `create::<P>` and the
    // host calls `destroy` once.
    let inst = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    // A panicking Drop must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(inst)));
}

extern "C" fn last_error<P: Plugin>(instance: *mut c_void) -> abi::Str {
    if instance.is_null() {
        // The string lives in a static; the host copies it before calling again.
        return match CREATE_ERROR.lock() {
            Ok(e) => abi::Str::new(leak_copy(&e)),
            Err(_) => abi::Str::new("create failed"),
        };
    }
    // SAFETY: `instance` came from `create::<P>`; calls are serialised.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    abi::Str::new(&inst.last_error)
}

/// Create errors are rare (once per start-up), so a small leak keeps the
/// returned pointer valid without a lock held across the boundary.
fn leak_copy(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

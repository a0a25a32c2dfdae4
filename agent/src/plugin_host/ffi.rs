//! The host side of the plugin boundary: every `unsafe` the agent needs to
//! talk to a plugin library is in this file.
//!
//! Nothing a plugin hands over is used as given: the table is copied at
//! `min(plugin's size, ours)` and zero-filled, and every pointer, length and
//! string in it is checked before anything reads through it (abi.rs, the
//! "Compatibility" section).

use std::ffi::c_void;
use std::path::Path;

use libloading::Library;
use vnt_plugin_api::abi::{self, Status};
use vnt_plugin_api::{HookKind, Observation, ENTRY_ERROR_SYMBOL, ENTRY_SYMBOL};

use super::{FieldInfo, HookInfo, MetricInfo, PluginError, PluginMeta, ProbeAltInfo, ProbeInfo};

type EntryFn = extern "C" fn() -> *const abi::PluginTable;
type EntryErrorFn = extern "C" fn() -> abi::Str;

/// The functions of a plugin table, copied out of it.
#[derive(Clone, Copy)]
struct Calls {
    create: extern "C" fn(abi::Bytes, *const abi::Host, *mut *mut c_void) -> i32,
    decode: extern "C" fn(*mut c_void, abi::Bytes, *const abi::Sink) -> i32,
    destroy: extern "C" fn(*mut c_void),
    last_error: extern "C" fn(*mut c_void) -> abi::Str,
    tick: Option<extern "C" fn(*mut c_void, *const abi::Sink) -> i32>,
}

/// `#[repr(C)]` records of the boundary whose every field is an integer or a
/// raw pointer, so that all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for a `#[repr(C)]` type that is valid when zeroed.
unsafe trait Plain: Copy {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::Probe {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::ProbeAlternative {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::Hook {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::Observation {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::FieldSpec {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::MetricSpec {}
// SAFETY: integers and raw pointers only.
unsafe impl Plain for abi::FieldValue {}

/// Read a record of `plugin_size` bytes as this host's `T`: the first
/// `min(plugin_size, size_of::<T>())` bytes are the plugin's, the rest zero.
///
/// SAFETY (caller): `ptr` points to `plugin_size` readable bytes.
unsafe fn read_prefix<T: Plain>(ptr: *const u8, plugin_size: usize) -> T {
    let n = plugin_size.min(std::mem::size_of::<T>());
    // SAFETY: `T: Plain` is valid when zeroed.
    let mut value: T = unsafe { std::mem::zeroed() };
    // SAFETY: `ptr` has `n <= plugin_size` readable bytes (caller); `value`
    // has `n <= size_of::<T>()` writable bytes; they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(ptr, (&mut value as *mut T).cast::<u8>(), n) };
    value
}

/// A field of a plugin's table that cannot be used as it is.
#[derive(Debug)]
struct Invalid {
    field: String,
    reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Check a pointer and length pair before anything reads through it.
fn check_span(
    field: &str,
    ptr: *const u8,
    len: usize,
    max: usize,
    align: usize,
) -> Result<(), Invalid> {
    if len > max {
        return Err(invalid(
            field,
            format!("is {len}, more than the {max} allowed"),
        ));
    }
    if len > 0 && ptr.is_null() {
        return Err(invalid(field, format!("is {len} with a null pointer")));
    }
    if len > 0 && (ptr as usize) % align != 0 {
        return Err(invalid(
            field,
            format!("has a pointer ({ptr:p}) not aligned to {align} bytes"),
        ));
    }
    Ok(())
}

/// Copy a plugin-owned string of its static table: bounded, UTF-8.
///
/// SAFETY (caller): a non-null `s.ptr` points to `s.len` readable bytes.
unsafe fn checked_str(field: &str, s: abi::Str) -> Result<String, Invalid> {
    check_span(field, s.ptr, s.len, abi::MAX_STR_LEN, 1)?;
    if s.len == 0 {
        return Ok(String::new());
    }
    // SAFETY: checked non-null and bounded; readable by the caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8(bytes.to_vec())
        .map_err(|e| invalid(field, format!("is not UTF-8 ({})", e.utf8_error())))
}

/// Copy a message a plugin passes (a log line, an error): bounded; invalid
/// UTF-8 replaced; a bad pointer or length is said, not followed.
///
/// SAFETY (caller): a non-null `s.ptr` points to `s.len` readable bytes.
unsafe fn copy_message(s: abi::Str) -> String {
    if let Err(e) = check_span("message", s.ptr, s.len, abi::MAX_STR_LEN, 1) {
        return format!("(unreadable message from the plugin: {})", e.reason);
    }
    if s.len == 0 {
        return String::new();
    }
    // SAFETY: checked non-null and bounded; readable by the caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// The agent's effective user id (the owner a plugin file may have besides root).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An opened plugin library whose ABI and table have been checked.
pub struct PluginLibrary {
    calls: Calls,
    // Dropped last: the functions above are its code.
    _lib: Library,
}

// SAFETY: `calls` are functions of the library, which stays loaded as long
// as this value lives; the plugin contract (abi.rs) makes them callable from
// any thread with calls on one instance serialised.
unsafe impl Send for PluginLibrary {}

/// Open `path`, find the entry symbol and check the ABI header before
/// reading anything else; then copy and check the table. Returns the library
/// and its static description.
pub fn open(path: &Path) -> Result<(PluginLibrary, PluginMeta), PluginError> {
    let display = path.display().to_string();
    // SAFETY: loading a library runs its initialisers; plugins are trusted
    // code the operator chose to load (and whose file passed `trust`).
    let lib = unsafe { Library::new(path) }.map_err(|e| PluginError::Open {
        path: display.clone(),
        reason: e.to_string(),
    })?;
    // SAFETY: the symbol is declared by the ABI as `extern "C" fn() -> *const PluginTable`.
    let entry: EntryFn = unsafe {
        *lib.get::<EntryFn>(ENTRY_SYMBOL.as_bytes())
            .map_err(|_| PluginError::NotAPlugin {
                path: display.clone(),
                symbol: ENTRY_SYMBOL,
            })?
    };
    let table = entry();
    if table.is_null() {
        // SAFETY: the optional symbol is declared by the ABI (1.2) as
        // `extern "C" fn() -> Str`.
        let why = match unsafe { lib.get::<EntryErrorFn>(ENTRY_ERROR_SYMBOL.as_bytes()) } {
            Ok(f) => {
                let f: EntryErrorFn = *f;
                // SAFETY: the string is the plugin's, valid until its next call.
                unsafe { copy_message(f()) }
            }
            Err(_) => String::new(),
        };
        return Err(PluginError::Invalid {
            path: display,
            plugin: None,
            field: ENTRY_SYMBOL.into(),
            reason: format!(
                "returned no table: {}",
                if why.is_empty() {
                    "no reason given"
                } else {
                    &why
                }
            ),
        });
    }
    // Only the 8-byte header is common to every ABI version: read it alone.
    // SAFETY: the entry point returned a non-null pointer to a table that
    // starts with `abi_major: u16, abi_minor: u16, struct_size: u32`.
    let (major, minor, size) = unsafe {
        let p = table.cast::<u8>();
        (
            p.cast::<u16>().read_unaligned(),
            p.add(2).cast::<u16>().read_unaligned(),
            p.add(4).cast::<u32>().read_unaligned(),
        )
    };
    abi::check_abi(major, minor).map_err(|reason| PluginError::Abi {
        path: display.clone(),
        reason,
    })?;
    let size = size as usize;
    let bad_table = |field: &str, reason: String| PluginError::Invalid {
        path: display.clone(),
        plugin: None,
        field: field.into(),
        reason,
    };
    if size < abi::TABLE_SIZE_1_0 {
        return Err(bad_table(
            "struct_size",
            format!(
                "is {size}: the table is smaller than ABI 1.0's {} bytes",
                abi::TABLE_SIZE_1_0
            ),
        ));
    }
    if size > abi::MAX_STRUCT_SIZE {
        return Err(bad_table(
            "struct_size",
            format!("is {size}, more than the {} allowed", abi::MAX_STRUCT_SIZE),
        ));
    }
    // Copy min(plugin's size, ours), zero the rest: an older minor's table
    // is shorter than this host's.
    let mut buf = std::mem::MaybeUninit::<abi::PluginTable>::zeroed();
    // SAFETY: the plugin's table has `size` readable bytes (its declared
    // size, at least 1.0's); `buf` has size_of::<PluginTable>() writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            table.cast::<u8>(),
            buf.as_mut_ptr().cast::<u8>(),
            size.min(std::mem::size_of::<abi::PluginTable>()),
        )
    };
    // The four functions are within 1.0's size: none may be null.
    for (field, offset) in [
        ("create", std::mem::offset_of!(abi::PluginTable, create)),
        ("decode", std::mem::offset_of!(abi::PluginTable, decode)),
        ("destroy", std::mem::offset_of!(abi::PluginTable, destroy)),
        (
            "last_error",
            std::mem::offset_of!(abi::PluginTable, last_error),
        ),
    ] {
        // SAFETY: `offset` is within the buffer, which is initialised
        // (zeroed, then copied over).
        let word = unsafe {
            buf.as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<usize>()
                .read_unaligned()
        };
        if word == 0 {
            return Err(bad_table(field, "is a null function pointer".into()));
        }
    }
    // SAFETY: every byte is initialised (copied or zero) and the function
    // pointers were checked non-null; the other fields are integers and raw
    // pointers, valid for any bits.
    let t = unsafe { buf.assume_init() };
    // SAFETY: the table's strings and arrays point into the library's static
    // data (ABI contract), alive while `lib` is; `read_meta` checks every
    // pointer and length before reading through it.
    let mut meta = unsafe { read_meta(&t, minor) }.map_err(|(plugin, e)| PluginError::Invalid {
        path: display.clone(),
        plugin,
        field: e.field,
        reason: e.reason,
    })?;
    meta.check_declarations()
        .map_err(|reason| PluginError::Invalid {
            path: display.clone(),
            plugin: Some(meta.name.clone()),
            field: "fields/metrics".into(),
            reason,
        })?;
    let calls = Calls {
        create: t.create,
        decode: t.decode,
        destroy: t.destroy,
        last_error: t.last_error,
        // Within the plugin's size only from 1.3 on (zero before).
        tick: if minor >= 3 && meta.tick_interval_ms > 0 {
            t.tick
        } else {
            None
        },
    };
    Ok((PluginLibrary { calls, _lib: lib }, meta))
}

/// Element size of one of the table's arrays: declared since 1.2, 1.0's before.
fn element_size(field: &str, declared: u32, minor: u16, min: usize) -> Result<usize, Invalid> {
    if minor < 2 {
        return Ok(min);
    }
    let n = declared as usize;
    if n < min || n > abi::MAX_STRUCT_SIZE {
        return Err(invalid(
            field,
            format!(
                "is {n}; it must be {min} (ABI 1.0) to {}",
                abi::MAX_STRUCT_SIZE
            ),
        ));
    }
    Ok(n)
}

/// Copy and check everything the table points to. The error names the
/// plugin when its name could be read.
///
/// SAFETY (caller): `t` is a copy of a plugin's table whose non-null
/// pointers point into the library's static data; lengths are checked here.
unsafe fn read_meta(
    t: &abi::PluginTable,
    minor: u16,
) -> Result<PluginMeta, (Option<String>, Invalid)> {
    // SAFETY: the caller's contract; `checked_str` bounds the length.
    let name = unsafe { checked_str("name", t.name) }.map_err(|e| (None, e))?;
    let named = |e: Invalid| (Some(name.clone()), e);
    let probe_size =
        element_size("probe_size", t.probe_size, minor, abi::PROBE_SIZE_1_0).map_err(named)?;
    let alt_size = element_size(
        "alternative_size",
        t.alternative_size,
        minor,
        abi::ALTERNATIVE_SIZE_1_0,
    )
    .map_err(named)?;
    let hook_size =
        element_size("hook_size", t.hook_size, minor, abi::HOOK_SIZE_1_0).map_err(named)?;
    // Probe flags known at the plugin's minor: 1.0's `required: bool` is bit 0.
    let probe_flags_known = if minor >= 1 {
        abi::probe_flags::REQUIRED | abi::probe_flags::OPT_IN
    } else {
        abi::probe_flags::REQUIRED
    };
    check_span(
        "probes_len",
        t.probes.cast(),
        t.probes_len,
        abi::MAX_PROBES,
        8,
    )
    .map_err(named)?;
    let mut probes = Vec::with_capacity(t.probes_len);
    for i in 0..t.probes_len {
        // SAFETY: `probes` has `probes_len` elements of `probe_size` bytes
        // (checked non-null, aligned and bounded above).
        let p: abi::Probe =
            unsafe { read_prefix(t.probes.cast::<u8>().add(i * probe_size), probe_size) };
        let field = |f: &str| format!("probes[{i}].{f}");
        // SAFETY: a static string of the plugin; checked.
        let probe_name = unsafe { checked_str(&field("name"), p.name) }.map_err(named)?;
        check_span(
            &field("alternatives_len"),
            p.alternatives.cast(),
            p.alternatives_len,
            abi::MAX_ALTERNATIVES,
            8,
        )
        .map_err(named)?;
        let mut alternatives = Vec::with_capacity(p.alternatives_len);
        for j in 0..p.alternatives_len {
            // SAFETY: `alternatives` has `alternatives_len` elements of
            // `alt_size` bytes (checked above).
            let a: abi::ProbeAlternative =
                unsafe { read_prefix(p.alternatives.cast::<u8>().add(j * alt_size), alt_size) };
            let field = |f: &str| format!("probes[{i}].alternatives[{j}].{f}");
            alternatives.push(ProbeAltInfo {
                kind: HookKind::from_raw(a.kind),
                raw_kind: a.kind,
                // SAFETY: static strings of the plugin; checked.
                program: unsafe { checked_str(&field("program"), a.program) }.map_err(named)?,
                // SAFETY: as above.
                target: unsafe { checked_str(&field("target"), a.target) }.map_err(named)?,
            });
        }
        let flags = p.flags & probe_flags_known;
        probes.push(ProbeInfo {
            name: probe_name,
            required: flags & abi::probe_flags::REQUIRED != 0,
            opt_in: flags & abi::probe_flags::OPT_IN != 0,
            alternatives,
        });
    }
    check_span("hooks_len", t.hooks.cast(), t.hooks_len, abi::MAX_HOOKS, 8).map_err(named)?;
    let mut hooks = Vec::with_capacity(t.hooks_len);
    for i in 0..t.hooks_len {
        // SAFETY: `hooks` has `hooks_len` elements of `hook_size` bytes
        // (checked above).
        let h: abi::Hook =
            unsafe { read_prefix(t.hooks.cast::<u8>().add(i * hook_size), hook_size) };
        let field = |f: &str| format!("hooks[{i}].{f}");
        hooks.push(HookInfo {
            id: h.id,
            terminal: h.flags & abi::hook_flags::TERMINAL != 0,
            // SAFETY: static strings of the plugin; checked.
            name: unsafe { checked_str(&field("name"), h.name) }.map_err(named)?,
            // SAFETY: as above.
            label: unsafe { checked_str(&field("label"), h.label) }.map_err(named)?,
        });
    }
    let (fields, metrics) = if minor >= 3 {
        // SAFETY: the caller's contract; `read_declarations` checks every
        // pointer and length.
        unsafe { read_declarations(t) }.map_err(named)?
    } else {
        (Vec::new(), Vec::new())
    };
    check_span(
        "bpf_object",
        t.bpf_object.ptr,
        t.bpf_object.len,
        abi::MAX_BPF_OBJECT_LEN,
        1,
    )
    .map_err(named)?;
    let object = if t.bpf_object.len == 0 {
        Vec::new()
    } else {
        // SAFETY: static bytes of the plugin; checked non-null and bounded.
        unsafe { std::slice::from_raw_parts(t.bpf_object.ptr, t.bpf_object.len) }.to_vec()
    };
    Ok(PluginMeta {
        abi_major: t.abi_major,
        abi_minor: t.abi_minor,
        // SAFETY: static strings of the plugin; checked.
        version: unsafe { checked_str("version", t.version) }.map_err(named)?,
        // SAFETY: as above.
        description: unsafe { checked_str("description", t.description) }.map_err(named)?,
        name,
        test_fixture: minor >= 2 && t.flags & abi::plugin_flags::TEST_FIXTURE != 0,
        bpf_object: object,
        probes,
        hooks,
        fields,
        metrics,
        tick_interval_ms: if minor >= 3 { t.tick_interval_ms } else { 0 },
        joins_by_tcp_seq: minor >= 3 && t.flags & abi::plugin_flags::JOINS_BY_TCP_SEQ != 0,
    })
}

/// Copy the fields and metrics a 1.3 plugin declares. Names and references
/// are checked by `PluginMeta::check_declarations`; this checks what memory
/// safety needs: pointers, lengths, sizes, strings.
///
/// SAFETY (caller): as `read_meta`.
unsafe fn read_declarations(
    t: &abi::PluginTable,
) -> Result<(Vec<FieldInfo>, Vec<MetricInfo>), Invalid> {
    let new_in_1_3 = |field: &str, declared: u32, ours: usize| {
        let n = declared as usize;
        if n < ours || n > abi::MAX_STRUCT_SIZE {
            Err(invalid(
                field,
                format!("is {n}; it must be {ours} to {}", abi::MAX_STRUCT_SIZE),
            ))
        } else {
            Ok(n)
        }
    };
    let field_size = new_in_1_3(
        "field_size",
        t.field_size,
        std::mem::size_of::<abi::FieldSpec>(),
    )
    .or_else(|e| if t.fields_len == 0 { Ok(0) } else { Err(e) })?;
    let metric_size = new_in_1_3(
        "metric_size",
        t.metric_size,
        std::mem::size_of::<abi::MetricSpec>(),
    )
    .or_else(|e| if t.metrics_len == 0 { Ok(0) } else { Err(e) })?;
    check_span(
        "fields_len",
        t.fields.cast(),
        t.fields_len,
        abi::MAX_FIELDS,
        8,
    )?;
    check_span(
        "metrics_len",
        t.metrics.cast(),
        t.metrics_len,
        abi::MAX_METRICS,
        8,
    )?;
    let mut fields = Vec::with_capacity(t.fields_len);
    for i in 0..t.fields_len {
        // SAFETY: `fields` has `fields_len` elements of `field_size` bytes
        // (checked above).
        let f: abi::FieldSpec =
            unsafe { read_prefix(t.fields.cast::<u8>().add(i * field_size), field_size) };
        let field = |f: &str| format!("fields[{i}].{f}");
        let kind = vnt_plugin_api::FieldKind::from_raw(f.kind)
            .ok_or_else(|| invalid(field("kind"), format!("is {}, not a field kind", f.kind)))?;
        fields.push(FieldInfo {
            // SAFETY: static strings of the plugin; checked.
            name: unsafe { checked_str(&field("name"), f.name) }?,
            // SAFETY: as above.
            unit: unsafe { checked_str(&field("unit"), f.unit) }?,
            // SAFETY: as above.
            otel_key: unsafe { checked_str(&field("otel_key"), f.otel_key) }?,
            // SAFETY: as above.
            description: unsafe { checked_str(&field("description"), f.description) }?,
            kind,
            low_cardinality: f.cardinality != abi::cardinality::HIGH,
            key: std::sync::Arc::from(""),
        });
    }
    let mut metrics = Vec::with_capacity(t.metrics_len);
    for i in 0..t.metrics_len {
        // SAFETY: `metrics` has `metrics_len` elements of `metric_size` bytes
        // (checked above).
        let m: abi::MetricSpec =
            unsafe { read_prefix(t.metrics.cast::<u8>().add(i * metric_size), metric_size) };
        let field = |f: &str| format!("metrics[{i}].{f}");
        let kind = vnt_plugin_api::MetricKind::from_raw(m.kind)
            .ok_or_else(|| invalid(field("kind"), format!("is {}, not a metric kind", m.kind)))?;
        check_span(
            &field("labels_len"),
            m.labels.cast(),
            m.labels_len,
            abi::MAX_LABELS,
            2,
        )?;
        check_span(
            &field("buckets_len"),
            m.buckets.cast(),
            m.buckets_len,
            abi::MAX_BUCKETS,
            8,
        )?;
        let labels = if m.labels_len == 0 {
            Vec::new()
        } else {
            // SAFETY: checked non-null, aligned and bounded; static data of the plugin.
            unsafe { std::slice::from_raw_parts(m.labels, m.labels_len) }.to_vec()
        };
        let buckets = if m.buckets_len == 0 {
            Vec::new()
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(m.buckets, m.buckets_len) }.to_vec()
        };
        metrics.push(MetricInfo {
            // SAFETY: static strings of the plugin; checked.
            name: unsafe { checked_str(&field("name"), m.name) }?,
            // SAFETY: as above.
            unit: unsafe { checked_str(&field("unit"), m.unit) }?,
            // SAFETY: as above.
            description: unsafe { checked_str(&field("description"), m.description) }?,
            kind,
            labels,
            buckets,
        });
    }
    Ok((fields, metrics))
}

/// Distinct texts of a plugin's low-cardinality fields (a state, a reason,
/// TCP flags), kept once for the process's life: a hop's text value then
/// costs no allocation. At most [`INTERN_MAX`] per plugin instance (at most
/// 1 KiB each); beyond, and for other fields, texts are copied.
#[derive(Default)]
pub struct Interner {
    known: std::collections::HashSet<&'static str, foldhash::fast::RandomState>,
    /// By field id: low cardinality.
    low: Vec<bool>,
}

/// Distinct texts kept per plugin instance.
const INTERN_MAX: usize = 4096;

impl Interner {
    /// For a plugin whose fields of id `i` are low-cardinality when `low[i]`.
    pub fn new(low: Vec<bool>) -> Interner {
        Interner {
            known: Default::default(),
            low,
        }
    }

    fn text(&mut self, field: u16, bytes: &[u8]) -> Option<std::borrow::Cow<'static, str>> {
        let s = std::str::from_utf8(bytes).ok()?;
        if self.low.get(usize::from(field)).copied().unwrap_or(false) {
            if let Some(k) = self.known.get(s) {
                return Some(std::borrow::Cow::Borrowed(k));
            }
            if self.known.len() < INTERN_MAX {
                // Bounded above: kept for the process's life on purpose.
                let kept: &'static str = Box::leak(s.to_owned().into_boxed_str());
                self.known.insert(kept);
                return Some(std::borrow::Cow::Borrowed(kept));
            }
        }
        Some(std::borrow::Cow::Owned(s.to_owned()))
    }
}

/// Copy the values an observation carries (ABI 1.3): bounded count, each
/// text bounded and UTF-8. `None` when anything is out of bounds.
///
/// SAFETY (caller): `raw` is a plugin's observation during its `emit` call.
unsafe fn copy_values(
    raw: &abi::Observation,
    interner: &mut Interner,
) -> Option<Vec<vnt_plugin_api::FieldValue>> {
    if raw.values_len == 0 {
        return Some(Vec::new());
    }
    check_span(
        "values",
        raw.values.cast(),
        raw.values_len,
        abi::MAX_VALUES,
        8,
    )
    .ok()?;
    let mut out = Vec::with_capacity(raw.values_len);
    for i in 0..raw.values_len {
        // SAFETY: `values` has `values_len` elements (checked above), valid
        // for the call.
        let v: abi::FieldValue = unsafe { raw.values.add(i).read_unaligned() };
        let text = if v.kind == abi::field_kind::STR && v.text.len > 0 {
            check_span("text", v.text.ptr, v.text.len, abi::MAX_TEXT_VALUE, 1).ok()?;
            // SAFETY: checked non-null and bounded; valid for the call.
            let b = unsafe { std::slice::from_raw_parts(v.text.ptr, v.text.len) };
            Some(interner.text(v.field, b)?)
        } else {
            None
        };
        out.push(vnt_plugin_api::value_from_raw(&v, text).ok()?);
    }
    Some(out)
}

/// Log context handed to a plugin instance: its name, for the log fields.
struct LogCtx {
    plugin: String,
}

extern "C" fn host_log(ctx: *mut c_void, level: u32, message: abi::Str) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `ctx` is the `LogCtx` the host boxed for this instance and
        // keeps alive until after `destroy`.
        let ctx = unsafe { &*ctx.cast::<LogCtx>() };
        // SAFETY: the plugin passes a string valid for this call.
        let msg = unsafe { copy_message(message) };
        let plugin = ctx.plugin.as_str();
        match level {
            1 => tracing::error!(plugin, "{msg}"),
            2 => tracing::warn!(plugin, "{msg}"),
            3 => tracing::info!(plugin, "{msg}"),
            4 => tracing::debug!(plugin, "{msg}"),
            _ => tracing::trace!(plugin, "{msg}"),
        }
    });
}

/// What a decode call produced besides observations.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// Decoded (observations appended).
    Ok,
    /// The plugin rejected the record; it stays usable.
    Error(String),
    /// The plugin panicked; it must be disabled.
    Panicked(String),
    /// The plugin emitted more than [`MAX_OBSERVATIONS_PER_RECORD`]
    /// observations for one record (how many it tried): a flood, it must be
    /// disabled. Those beyond the limit were not kept.
    Flooded(u64),
}

/// The most observations one record may give: a record is one event at one
/// hook; a decoder that makes more is broken or hostile, and would otherwise
/// grow the agent's memory at its will.
pub const MAX_OBSERVATIONS_PER_RECORD: u64 = 64;

struct SinkState<'a> {
    out: &'a mut Vec<Observation>,
    malformed: u64,
    interner: &'a mut Interner,
    /// Observations emitted by this call, kept or not.
    emitted: u64,
}

extern "C" fn host_emit(ctx: *mut c_void, obs: *const abi::Observation) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `SinkState` on the stack of `Instance::decode`,
        // which is blocked in the plugin's `decode` for the whole call.
        let state = unsafe { &mut *ctx.cast::<SinkState<'_>>() };
        if obs.is_null() {
            state.malformed += 1;
            return;
        }
        state.emitted += 1;
        if state.emitted > MAX_OBSERVATIONS_PER_RECORD {
            return;
        }
        // Read the size first: an older plugin's struct may be shorter, a
        // newer one longer; read min(its size, ours), zero the rest.
        // SAFETY: every version of `Observation` starts with `struct_size: u32`.
        let size = unsafe { obs.cast::<u32>().read_unaligned() } as usize;
        if !(abi::OBSERVATION_SIZE_1_0..=abi::MAX_STRUCT_SIZE).contains(&size) {
            state.malformed += 1;
            return;
        }
        // SAFETY: the plugin passes an observation of `size` bytes, valid for this call.
        let raw: abi::Observation = unsafe { read_prefix(obs.cast::<u8>(), size) };
        // SAFETY: the values belong to this observation, valid for this call
        // (zero before 1.3: the prefix read zero-fills them).
        let Some(values) = (unsafe { copy_values(&raw, state.interner) }) else {
            state.malformed += 1;
            return;
        };
        match Observation::from_raw(&raw, values) {
            Ok(o) => state.out.push(o),
            Err(_) => state.malformed += 1,
        }
    }));
}

/// A live plugin instance.
pub struct Instance {
    calls: Calls,
    ptr: *mut c_void,
    interner: Interner,
    _log: Box<LogCtx>,
    _host: Box<abi::Host>,
}

// SAFETY: plugin instances may move between threads (the `Plugin` trait
// requires `Send`); the host serialises calls through `&mut self`.
unsafe impl Send for Instance {}

impl PluginLibrary {
    /// Create an instance with the plugin's JSON config; `low_cardinality`
    /// says, by field id, whose texts are kept once ([`Interner`]).
    pub fn create(
        &self,
        plugin: &str,
        config: &[u8],
        low_cardinality: Vec<bool>,
    ) -> Result<Instance, String> {
        let mut log = Box::new(LogCtx {
            plugin: plugin.to_string(),
        });
        let host = Box::new(abi::Host {
            struct_size: std::mem::size_of::<abi::Host>() as u32,
            ctx: (&mut *log as *mut LogCtx).cast(),
            log: host_log,
        });
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let t = self.calls;
        let status = Status::from_raw((t.create)(abi::Bytes::new(config), &*host, &mut ptr));
        if status != Status::Ok || ptr.is_null() {
            // SAFETY: `last_error(null)` returns the create error, valid until the next call.
            let msg = unsafe { copy_message((t.last_error)(std::ptr::null_mut())) };
            return Err(if status == Status::Panicked {
                format!("panicked while starting: {msg}")
            } else {
                msg
            });
        }
        Ok(Instance {
            calls: self.calls,
            ptr,
            interner: Interner::new(low_cardinality),
            _log: log,
            _host: host,
        })
    }
}

impl Instance {
    /// Decode one record, appending observations to `out`. Returns the
    /// outcome and how many observations were malformed.
    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Observation>) -> (DecodeOutcome, u64) {
        let t = self.calls;
        let ptr = self.ptr;
        self.call(out, |sink| (t.decode)(ptr, abi::Bytes::new(record), sink))
    }

    /// Run the plugin's timer callback (ABI 1.3), appending what it emits;
    /// `None` when it has none.
    pub fn tick(&mut self, out: &mut Vec<Observation>) -> Option<(DecodeOutcome, u64)> {
        let tick = self.calls.tick?;
        let ptr = self.ptr;
        Some(self.call(out, |sink| tick(ptr, sink)))
    }

    fn call(
        &mut self,
        out: &mut Vec<Observation>,
        f: impl FnOnce(&abi::Sink) -> i32,
    ) -> (DecodeOutcome, u64) {
        let mut state = SinkState {
            out,
            malformed: 0,
            interner: &mut self.interner,
            emitted: 0,
        };
        let sink = abi::Sink {
            ctx: (&mut state as *mut SinkState<'_>).cast(),
            emit: host_emit,
        };
        let t = self.calls;
        let status = Status::from_raw(f(&sink));
        let last_error = || {
            // SAFETY: `last_error` on our live instance; copied before the next call.
            unsafe { copy_message((t.last_error)(self.ptr)) }
        };
        let outcome = match status {
            _ if state.emitted > MAX_OBSERVATIONS_PER_RECORD => {
                DecodeOutcome::Flooded(state.emitted)
            }
            Status::Ok => DecodeOutcome::Ok,
            Status::Error => DecodeOutcome::Error(last_error()),
            Status::Panicked => DecodeOutcome::Panicked(last_error()),
        };
        (outcome, state.malformed)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // `ptr` came from `create` and is destroyed exactly once; the
        // library outlives the instance (its owner drops it after).
        (self.calls.destroy)(self.ptr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_checked_before_use() {
        let p = [0u64; 2];
        let ptr = p.as_ptr().cast::<u8>();
        assert!(check_span("f", ptr, 2, 2, 8).is_ok());
        assert!(check_span("f", std::ptr::null(), 0, 2, 8).is_ok());
        let e = check_span("f", ptr, 1 << 40, 1024, 1).unwrap_err();
        assert_eq!(e.reason, "is 1099511627776, more than the 1024 allowed");
        let e = check_span("f", std::ptr::null(), 3, 1024, 1).unwrap_err();
        assert_eq!(e.reason, "is 3 with a null pointer");
        // SAFETY: only compared, never read through.
        let odd = unsafe { ptr.add(1) };
        assert!(check_span("f", odd, 1, 8, 8).is_err());
    }

    #[test]
    fn strings_must_be_utf8_and_bounded() {
        let bad = [0xffu8, 0xfe];
        // SAFETY: `bad` is readable for its length.
        let e = unsafe {
            checked_str(
                "name",
                abi::Str {
                    ptr: bad.as_ptr(),
                    len: 2,
                },
            )
        }
        .unwrap_err();
        assert!(e.reason.starts_with("is not UTF-8"), "{}", e.reason);
        let e = unsafe {
            // SAFETY: refused on its length before any read.
            checked_str(
                "name",
                abi::Str {
                    ptr: bad.as_ptr(),
                    len: 1 << 40,
                },
            )
        }
        .unwrap_err();
        assert!(e.reason.contains("more than the 65536 allowed"));
    }

    /// A record shorter than ours (an older minor) is read as far as it goes,
    /// the rest zero; a longer one (padding of a later minor) is cut.
    #[test]
    fn short_records_are_zero_filled() {
        let mut full = abi::Observation {
            struct_size: 184,
            kind: 1,
            pkt_id: 0x1122,
            detail: 7,
            ..Default::default()
        };
        // SAFETY: `full` has 184 readable bytes; 40 of them are read.
        let short: abi::Observation =
            unsafe { read_prefix((&full as *const abi::Observation).cast(), 40) };
        assert_eq!((short.kind, short.pkt_id, short.detail), (1, 0x1122, 0));
        full.detail = 9;
        let mut longer = [0u8; 256];
        // SAFETY: both sides have 184 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&full as *const abi::Observation).cast::<u8>(),
                longer.as_mut_ptr(),
                184,
            )
        };
        // SAFETY: `longer` has 256 readable bytes.
        let cut: abi::Observation = unsafe { read_prefix(longer.as_ptr(), 256) };
        assert_eq!(cut.detail, 9);
    }

    #[test]
    fn element_sizes_come_from_1_2_on() {
        assert_eq!(element_size("probe_size", 0, 1, 40).unwrap(), 40);
        assert_eq!(element_size("probe_size", 48, 2, 40).unwrap(), 48);
        let e = element_size("probe_size", 8, 2, 40).unwrap_err();
        assert_eq!(e.field, "probe_size");
    }
}

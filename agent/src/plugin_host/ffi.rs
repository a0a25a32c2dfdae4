//! The host side of the plugin boundary: every `unsafe` the agent needs to
//! talk to a plugin library is in this file.

use std::ffi::c_void;
use std::path::Path;

use libloading::Library;
use vnt_plugin_api::abi::{self, Status};
use vnt_plugin_api::{HookKind, Observation, ENTRY_SYMBOL};

use super::{HookInfo, PluginError, PluginMeta, ProbeAltInfo, ProbeInfo};

type EntryFn = extern "C" fn() -> *const abi::PluginTable;

/// Copy a plugin-owned string.
///
/// SAFETY (caller): `s` points to `len` readable bytes, or `len` is 0.
unsafe fn copy_str(s: abi::Str) -> String {
    if s.len == 0 || s.ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// An opened plugin library whose ABI has been checked.
pub struct PluginLibrary {
    table: *const abi::PluginTable,
    // Dropped last: every pointer above points into it.
    _lib: Library,
}

// SAFETY: the table is immutable static data of the library, which stays
// loaded as long as this value lives; the plugin contract (abi.rs) makes its
// functions callable from any thread with calls on one instance serialised.
unsafe impl Send for PluginLibrary {}

/// Open `path`, find the entry symbol and check the ABI header before
/// reading anything else. Returns the library and its static description.
pub fn open(path: &Path) -> Result<(PluginLibrary, PluginMeta), PluginError> {
    let display = path.display().to_string();
    // SAFETY: loading a library runs its initialisers; plugins are trusted
    // code the operator chose to load, as with any shared library.
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
        return Err(PluginError::NotAPlugin {
            path: display,
            symbol: ENTRY_SYMBOL,
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
    if (size as usize) < std::mem::size_of::<abi::PluginTable>() {
        return Err(PluginError::Abi {
            path: display,
            reason: format!(
                "plugin table is {size} bytes, ABI {}.{} needs {}",
                abi::ABI_MAJOR,
                abi::ABI_MINOR,
                std::mem::size_of::<abi::PluginTable>()
            ),
        });
    }
    // SAFETY: ABI checked: the table has the layout of `abi::PluginTable`
    // and is static for the library's lifetime.
    let t = unsafe { &*table };
    // SAFETY: every `Str`/`Bytes` and array in the table points into the
    // library's static data (ABI contract), alive while `lib` is.
    let meta = unsafe { read_meta(t) };
    Ok((PluginLibrary { table, _lib: lib }, meta))
}

/// SAFETY (caller): `t` is a checked table whose pointers are valid.
unsafe fn read_meta(t: &abi::PluginTable) -> PluginMeta {
    let mut probes = Vec::with_capacity(t.probes_len);
    for i in 0..t.probes_len {
        // SAFETY: `probes` has `probes_len` elements.
        let p = unsafe { &*t.probes.add(i) };
        let mut alternatives = Vec::with_capacity(p.alternatives_len);
        for j in 0..p.alternatives_len {
            // SAFETY: `alternatives` has `alternatives_len` elements.
            let a = unsafe { &*p.alternatives.add(j) };
            alternatives.push(ProbeAltInfo {
                kind: HookKind::from_raw(a.kind),
                raw_kind: a.kind,
                // SAFETY: static strings of the plugin.
                program: unsafe { copy_str(a.program) },
                // SAFETY: as above.
                target: unsafe { copy_str(a.target) },
            });
        }
        probes.push(ProbeInfo {
            // SAFETY: static string of the plugin.
            name: unsafe { copy_str(p.name) },
            required: p.flags & abi::probe_flags::REQUIRED != 0,
            opt_in: p.flags & abi::probe_flags::OPT_IN != 0,
            alternatives,
        });
    }
    let mut hooks = Vec::with_capacity(t.hooks_len);
    for i in 0..t.hooks_len {
        // SAFETY: `hooks` has `hooks_len` elements.
        let h = unsafe { &*t.hooks.add(i) };
        hooks.push(HookInfo {
            id: h.id,
            terminal: h.terminal,
            // SAFETY: static strings of the plugin.
            name: unsafe { copy_str(h.name) },
            // SAFETY: as above.
            label: unsafe { copy_str(h.label) },
        });
    }
    let object = if t.bpf_object.len == 0 || t.bpf_object.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: static bytes of the plugin.
        unsafe { std::slice::from_raw_parts(t.bpf_object.ptr, t.bpf_object.len) }.to_vec()
    };
    PluginMeta {
        abi_major: t.abi_major,
        abi_minor: t.abi_minor,
        // SAFETY: static strings of the plugin.
        name: unsafe { copy_str(t.name) },
        // SAFETY: as above.
        version: unsafe { copy_str(t.version) },
        // SAFETY: as above.
        description: unsafe { copy_str(t.description) },
        bpf_object: object,
        probes,
        hooks,
    }
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
        let msg = unsafe { copy_str(message) };
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
}

struct SinkState<'a> {
    out: &'a mut Vec<Observation>,
    malformed: u64,
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
        // Read the size first: an older plugin's struct may be shorter.
        // SAFETY: every version of `Observation` starts with `struct_size: u32`.
        let size = unsafe { obs.cast::<u32>().read_unaligned() } as usize;
        if size < std::mem::size_of::<abi::Observation>() {
            state.malformed += 1;
            return;
        }
        // SAFETY: the plugin passes a valid observation of at least our size for this call.
        let raw = unsafe { obs.read_unaligned() };
        match Observation::try_from(&raw) {
            Ok(o) => state.out.push(o),
            Err(_) => state.malformed += 1,
        }
    }));
}

/// A live plugin instance.
pub struct Instance {
    table: *const abi::PluginTable,
    ptr: *mut c_void,
    _log: Box<LogCtx>,
    _host: Box<abi::Host>,
}

// SAFETY: plugin instances may move between threads (the `Plugin` trait
// requires `Send`); the host serialises calls through `&mut self`.
unsafe impl Send for Instance {}

impl PluginLibrary {
    /// Create an instance with the plugin's JSON config.
    pub fn create(&self, plugin: &str, config: &[u8]) -> Result<Instance, String> {
        let mut log = Box::new(LogCtx {
            plugin: plugin.to_string(),
        });
        let host = Box::new(abi::Host {
            struct_size: std::mem::size_of::<abi::Host>() as u32,
            ctx: (&mut *log as *mut LogCtx).cast(),
            log: host_log,
        });
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table was checked in `open`; the library outlives `self`.
        let t = unsafe { &*self.table };
        let status = Status::from_raw((t.create)(abi::Bytes::new(config), &*host, &mut ptr));
        if status != Status::Ok || ptr.is_null() {
            // SAFETY: `last_error(null)` returns the create error, valid until the next call.
            let msg = unsafe { copy_str((t.last_error)(std::ptr::null_mut())) };
            return Err(if status == Status::Panicked {
                format!("panicked while starting: {msg}")
            } else {
                msg
            });
        }
        Ok(Instance {
            table: self.table,
            ptr,
            _log: log,
            _host: host,
        })
    }
}

impl Instance {
    /// Decode one record, appending observations to `out`. Returns the
    /// outcome and how many observations were malformed.
    pub fn decode(&mut self, record: &[u8], out: &mut Vec<Observation>) -> (DecodeOutcome, u64) {
        let mut state = SinkState { out, malformed: 0 };
        let sink = abi::Sink {
            ctx: (&mut state as *mut SinkState<'_>).cast(),
            emit: host_emit,
        };
        // SAFETY: the table outlives the instance (the library is kept by the owner).
        let t = unsafe { &*self.table };
        let status = Status::from_raw((t.decode)(self.ptr, abi::Bytes::new(record), &sink));
        let last_error = || {
            // SAFETY: `last_error` on our live instance; copied before the next call.
            unsafe { copy_str((t.last_error)(self.ptr)) }
        };
        let outcome = match status {
            Status::Ok => DecodeOutcome::Ok,
            Status::Error => DecodeOutcome::Error(last_error()),
            Status::Panicked => DecodeOutcome::Panicked(last_error()),
        };
        (outcome, state.malformed)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the table outlives the instance; `ptr` came from `create`
        // and is destroyed exactly once.
        let t = unsafe { &*self.table };
        (t.destroy)(self.ptr);
    }
}

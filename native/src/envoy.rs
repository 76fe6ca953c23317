//! Safe wrappers over the callbacks of [`crate::abi`]: the only place that
//! dereferences what Envoy hands over. Views of Envoy's memory borrow from
//! the hook they were taken in and never outlive it.

use std::ffi::c_void;

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader};
use crate::delivery::{MainHost, Stat};

/// Sends `log` records to Envoy's `dynamic_modules` logger.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // SAFETY: a plain query of Envoy's logger, safe from any thread.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level_of(metadata.level())) }
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        // SAFETY: the message outlives the call; Envoy copies it.
        unsafe {
            abi::envoy_dynamic_module_callback_log(
                level_of(record.level()),
                ModuleBuffer::of(message.as_bytes()),
            )
        }
    }

    fn flush(&self) {}
}

fn level_of(level: log::Level) -> u32 {
    match level {
        log::Level::Error => abi::LOG_ERROR,
        log::Level::Warn => abi::LOG_WARN,
        log::Level::Info => abi::LOG_INFO,
        log::Level::Debug | log::Level::Trace => abi::LOG_DEBUG,
    }
}

static LOGGER: EnvoyLogger = EnvoyLogger;

pub fn init_logging() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// A pointer Envoy owns, handed between threads only as the ABI allows
/// (scheduler commits from the ticker; everything else on its own thread).
#[derive(Debug, Clone, Copy)]
pub struct Raw(pub *mut c_void);
// SAFETY: the pointers are opaque handles; Envoy documents which calls may
// use them from which thread, and the module follows that.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Raw {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    pub fn ptr(self) -> *mut c_void {
        self.0
    }
}

/// Metric ids by [`Stat::index`]; `None` where Envoy refused the name.
pub type StatIds = [Option<usize>; Stat::ALL.len()];

/// Defines every stat; only allowed inside `on_http_filter_config_new`.
pub fn define_stats(config: Raw) -> StatIds {
    let mut ids: StatIds = [None; Stat::ALL.len()];
    for stat in Stat::ALL {
        let name = stat.name();
        let mut id = 0usize;
        // SAFETY: `config` is the config being created; name outlives the call.
        let result = unsafe {
            if stat.is_gauge() {
                abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    config.0,
                    ModuleBuffer::of(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            } else {
                abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                    config.0,
                    ModuleBuffer::of(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            }
        };
        if result == abi::METRICS_SUCCESS {
            ids[stat.index()] = Some(id);
        } else {
            log::warn!("llm_billing: Envoy refused stat {name} (result {result})");
        }
    }
    ids
}

/// The main thread's view of Envoy for one config.
pub struct MainThread<'a> {
    pub config: Raw,
    pub cluster: &'a str,
    pub authority: &'a str,
    pub auth: &'a str,
    pub stats: &'a StatIds,
}

impl MainHost for MainThread<'_> {
    fn callout(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, String> {
        let mut headers = vec![
            ModuleHttpHeader::of(":method", method),
            ModuleHttpHeader::of(":path", path),
            ModuleHttpHeader::of("host", self.authority),
            ModuleHttpHeader::of("authorization", self.auth),
        ];
        if method == "POST" {
            headers.push(ModuleHttpHeader::of("content-type", "application/json"));
        } else {
            headers.push(ModuleHttpHeader::of("accept", "application/json"));
        }
        let mut id = 0u64;
        // SAFETY: called on the main thread (config_scheduled / callout
        // done); every buffer outlives the call and Envoy copies them.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.config.0,
                &mut id,
                ModuleBuffer::of(self.cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if result == abi::CALLOUT_INIT_SUCCESS {
            Ok(id)
        } else {
            Err(format!("callout refused ({})", callout_error(result)))
        }
    }

    fn add(&self, stat: Stat, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.stats[stat.index()] {
            // SAFETY: config-level metrics, any thread.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    self.config.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    n,
                );
            }
        }
    }

    fn set(&self, stat: Stat, value: u64) {
        if let Some(id) = self.stats[stat.index()] {
            // SAFETY: config-level metrics, any thread.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.config.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    value,
                );
            }
        }
    }
}

pub fn callout_error(result: u32) -> &'static str {
    match result {
        1 => "missing :method, :path or host",
        2 => "cluster not found",
        3 => "duplicate callout id",
        4 => "cannot create request (no healthy host?)",
        _ => "unknown result",
    }
}

/// One stream in Envoy, valid from `on_http_filter_new` to `_destroy`,
/// used only on its worker thread.
#[derive(Debug, Clone, Copy)]
pub struct Stream(pub *mut c_void);

impl Stream {
    /// Every header of `kind` as views into Envoy's map (valid for this hook).
    pub fn headers<'a>(self, kind: u32) -> Vec<(&'a str, &'a str)> {
        // SAFETY: `self` is the live stream of the running hook; the views
        // are read before any setter touches the map.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.0, kind);
            let mut raw = vec![
                EnvoyHttpHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0,
                };
                n
            ];
            if n == 0
                || !abi::envoy_dynamic_module_callback_http_get_headers(
                    self.0,
                    kind,
                    raw.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            raw.iter()
                .filter_map(|h| {
                    let (k, v) = h.parts();
                    Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
                })
                .collect()
        }
    }

    /// Replaces a header; `None` removes it.
    pub fn set_header(self, kind: u32, key: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: live stream, buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind,
                ModuleBuffer::of(key.as_bytes()),
                value,
            );
        }
    }

    /// The chunks of body `kind` as views into Envoy's buffer.
    pub fn body_chunks<'a>(self, kind: u32) -> Vec<&'a [u8]> {
        // SAFETY: live stream in a body hook; views used within the hook.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind);
            if n == 0 {
                return Vec::new();
            }
            let mut raw = vec![EnvoyBuffer::EMPTY; n];
            if !abi::envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                kind,
                raw.as_mut_ptr(),
            ) {
                return Vec::new();
            }
            raw.into_iter().map(|b| b.bytes()).collect()
        }
    }

    pub fn body_size(self, kind: u32) -> usize {
        // SAFETY: live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.0, kind) }
    }

    pub fn drain_body(self, kind: u32, bytes: usize) {
        // SAFETY: live stream; Envoy clamps to the size.
        unsafe {
            abi::envoy_dynamic_module_callback_http_drain_body(self.0, kind, bytes);
        }
    }

    pub fn append_body(self, kind: u32, data: &[u8]) {
        // SAFETY: live stream; Envoy copies the bytes.
        unsafe {
            abi::envoy_dynamic_module_callback_http_append_body(
                self.0,
                kind,
                ModuleBuffer::of(data),
            );
        }
    }

    /// True when the "received" request body is the buffer an earlier stop
    /// released (so it must not be read twice).
    pub fn received_is_buffered_request(self) -> bool {
        // SAFETY: live stream.
        unsafe { abi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.0) }
    }

    pub fn send_response(self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::of(k, v))
            .collect();
        let details = b"llm_billing";
        // SAFETY: live stream; Envoy copies headers, body and details.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details),
            );
        }
    }

    pub fn continue_decoding(self) {
        // SAFETY: live stream, on its worker (inside a hook).
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// A callout tied to this stream (cancelled if the stream goes first).
    pub fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, &'static str> {
        let mut headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::of(k, v))
            .collect();
        let mut id = 0u64;
        // SAFETY: live stream inside a hook; Envoy copies every buffer.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if result == abi::CALLOUT_INIT_SUCCESS {
            Ok(id)
        } else {
            Err(callout_error(result))
        }
    }

    pub fn add(self, stats: &StatIds, stat: Stat, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = stats[stat.index()] {
            // SAFETY: live stream, on its worker.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.0,
                    id,
                    std::ptr::null_mut(),
                    0,
                    n,
                );
            }
        }
    }
}

/// A callout's answer as the module uses it: its `:status` (`None` when
/// the call failed) and its body, joined from Envoy's chunks.
///
/// # Safety
/// `headers` and `chunks` must be Envoy's arrays of `n_headers` headers and
/// `n_chunks` buffers for the running hook (or null).
pub unsafe fn reply(
    result: u32,
    headers: *const EnvoyHttpHeader,
    n_headers: usize,
    chunks: *const EnvoyBuffer,
    n_chunks: usize,
) -> (Option<u16>, Vec<u8>) {
    if result != abi::CALLOUT_RESULT_SUCCESS || headers.is_null() {
        return (None, Vec::new());
    }
    let status = std::slice::from_raw_parts(headers, n_headers)
        .iter()
        .find_map(|h| {
            let (k, v) = h.parts();
            (k == b":status").then(|| std::str::from_utf8(v).ok()?.parse().ok())?
        });
    let mut body = Vec::new();
    if !chunks.is_null() {
        for c in std::slice::from_raw_parts(chunks, n_chunks) {
            body.extend_from_slice(c.bytes());
        }
    }
    (status, body)
}

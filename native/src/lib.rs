//! The LLM billing filter as an Envoy dynamic module (Envoy 1.40, ABI
//! v0.2.0): the `filter` crate's pure core (providers, SSE framing,
//! tracker, queue, deny list, reservations) behind a second, native host
//! adapter. It takes the wasm plugin's JSON configuration unchanged
//! (`filter_name: llm_billing`, `filter_config` a StringValue) and sends the
//! same records to the same collector API.
//!
//! Threads: stream hooks run on Envoy's workers and touch only their
//! stream and the shared [`delivery::Destination`] (a mutex held for a push
//! or a lookup). Every callout to the collector is made on the main thread,
//! woken every tick by a small ticker thread through Envoy's config
//! scheduler, so a record never depends on its request's lifetime.
//! No hook lets a panic cross into Envoy: each runs under `catch_unwind`
//! and falls back to letting the traffic through.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod abi;
pub mod delivery;
mod envoy;
mod stream;

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use filter::config::FilterConfig;

use crate::abi::{EnvoyBuffer, EnvoyHttpHeader};
use crate::delivery::{Destination, Poller, Reply};
use crate::envoy::{MainThread, Raw, StatIds, Stream};
use crate::stream::{now_ms, BillingStream};

/// The `filter_name` this module serves.
pub const FILTER_NAME: &str = "llm_billing";

/// One filter config (one listener's filter chain entry).
pub struct BillingConfig {
    pub filter: FilterConfig,
    pub dest: Arc<Destination>,
    pub stats: StatIds,
    envoy: Raw,
    auth: String,
    poller: Mutex<Poller>,
    ticker: Mutex<Option<Ticker>>,
}

/// Wakes the main thread every tick through the config's scheduler.
struct Ticker {
    scheduler: Raw,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// A tick committed and not run yet: a slow main thread is not flooded.
    pending: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(config_envoy: Raw, period: Duration) -> Option<Ticker> {
        // SAFETY: called inside on_http_filter_config_new with its config.
        let scheduler = Raw(unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy.0)
        });
        if scheduler.0.is_null() {
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let pending = Arc::new(AtomicBool::new(false));
        let (stop2, pending2) = (stop.clone(), pending.clone());
        let thread = std::thread::Builder::new()
            .name("llm_billing_tick".into())
            .spawn(move || {
                let (lock, wake) = &*stop2;
                let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                while !*stopped {
                    let (guard, _) = wake
                        .wait_timeout(stopped, period)
                        .unwrap_or_else(PoisonError::into_inner);
                    stopped = guard;
                    if !*stopped && !pending2.swap(true, Ordering::AcqRel) {
                        // SAFETY: commit is documented safe from any thread;
                        // the scheduler is deleted only after this thread ends.
                        unsafe {
                            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                                scheduler.ptr(),
                                0,
                            )
                        };
                    }
                }
            })
            .ok();
        let Some(thread) = thread else {
            // SAFETY: created above, never committed.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler.0)
            };
            return None;
        };
        Some(Ticker {
            scheduler,
            stop,
            pending,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // SAFETY: the only committer has ended.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0)
        };
    }
}

impl BillingConfig {
    fn main_thread(&self) -> MainThread<'_> {
        MainThread {
            config: self.envoy,
            cluster: &self.filter.collector_cluster,
            authority: &self.filter.collector_authority,
            auth: &self.auth,
            stats: &self.stats,
        }
    }

    fn on_tick(&self) {
        if let Some(t) = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            t.pending.store(false, Ordering::Release);
        }
        let host = self.main_thread();
        self.poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tick(&host, now_ms());
    }

    fn on_reply(&self, id: u64, reply: Reply<'_>) {
        let host = self.main_thread();
        self.poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_reply(&host, id, reply, now_ms());
    }
}

/// Runs a hook body; a panic is caught here, logged, and `fallback` is
/// returned, so Envoy never sees an unwind.
fn guard<T>(hook: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(_) => {
            log::error!("llm_billing: {hook} failed; the request goes on unbilled by this hook");
            fallback
        }
    }
}

/// # Safety
/// `ptr` must be what `envoy_dynamic_module_on_http_filter_config_new` returned.
unsafe fn config_of<'a>(ptr: abi::ConfigModulePtr) -> Option<&'a BillingConfig> {
    ptr.cast::<BillingConfig>().as_ref()
}

/// # Safety
/// `ptr` must be what `envoy_dynamic_module_on_http_filter_new` returned,
/// used on its worker.
unsafe fn stream_of<'a>(ptr: abi::FilterModulePtr) -> Option<&'a mut BillingStream> {
    ptr.cast::<BillingStream>().cast_mut().as_mut()
}

/// Checks at load that this Envoy exports every callback the module calls.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard("program init", std::ptr::null(), || {
        let missing = abi::missing_callbacks();
        if !missing.is_empty() {
            // Envoy's logger may be among the missing: stderr it is.
            eprintln!(
                "llm_billing: this Envoy does not provide the dynamic-module ABI v0.2.0 \
                 the module was built for (Envoy 1.40); missing callbacks: {}. \
                 Use the build of this module made for your Envoy, or the wasm plugin.",
                missing.join(", ")
            );
            return std::ptr::null();
        }
        envoy::init_logging();
        abi::ABI_VERSION.as_ptr().cast()
    })
}

/// # Safety
/// Called by Envoy on the main thread with valid buffers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: abi::ConfigEnvoyPtr,
    name: EnvoyBuffer,
    value: EnvoyBuffer,
) -> abi::ConfigModulePtr {
    guard("config", std::ptr::null(), || {
        let name = String::from_utf8_lossy(name.bytes());
        if name != FILTER_NAME {
            log::error!("llm_billing: unknown filter_name {name:?} (this module serves {FILTER_NAME:?}); the filter will not start");
            return std::ptr::null();
        }
        let filter = match FilterConfig::parse(Some(value.bytes())) {
            Ok(filter) => filter,
            Err(err) => {
                log::error!("llm_billing: {err}; the filter will not start");
                return std::ptr::null();
            }
        };
        let envoy = Raw(config_envoy);
        let stats = envoy::define_stats(envoy);
        let (dest, dropped) = delivery::destination(&filter);
        if dropped > 0 {
            log::warn!(
                "llm_billing: smaller buffer after reconfiguration dropped {dropped} oldest records"
            );
        }
        let filter_arc = Arc::new(filter.clone());
        let poller = Poller::new(filter_arc, dest.clone(), now_ms());
        let period = Duration::from_millis(poller.tick_ms());
        let Some(ticker) = Ticker::start(envoy, period) else {
            log::error!("llm_billing: cannot start the delivery ticker; the filter will not start");
            return std::ptr::null();
        };
        log::info!(
            "llm_billing: native module configured, shipping usage to cluster {:?} every {} ms{}",
            filter.collector_cluster,
            filter.flush_interval_ms,
            if filter.enforce_budgets {
                ", enforcing budgets"
            } else {
                ""
            }
        );
        let config = Arc::new(BillingConfig {
            auth: format!("Bearer {}", filter.ingest_token),
            filter,
            dest,
            stats,
            envoy,
            poller: Mutex::new(poller),
            ticker: Mutex::new(Some(ticker)),
        });
        Arc::into_raw(config).cast()
    })
}

/// # Safety
/// `config` is a pointer this module returned; called once, main thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: abi::ConfigModulePtr,
) {
    guard("config destroy", (), || {
        if config.is_null() {
            return;
        }
        let config = Arc::from_raw(config.cast::<BillingConfig>());
        let ticker = config
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut ticker) = ticker {
            ticker.stop();
        }
        config
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(now_ms());
        // Records still buffered stay with the destination for the next
        // config of the same collector.
        drop(config);
    });
}

/// # Safety
/// Called by Envoy on the main thread for a config this module made.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: abi::ConfigEnvoyPtr,
    config: abi::ConfigModulePtr,
    _event_id: u64,
) {
    guard("tick", (), || {
        if let Some(config) = config_of(config) {
            config.on_tick();
        }
    });
}

/// # Safety
/// Called by Envoy on the main thread with views valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: abi::ConfigEnvoyPtr,
    config: abi::ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_len: usize,
    chunks: *mut EnvoyBuffer,
    chunks_len: usize,
) {
    guard("collector answer", (), || {
        let Some(config) = config_of(config) else {
            return;
        };
        let (status, body) = envoy::reply(result, headers, headers_len, chunks, chunks_len);
        config.on_reply(
            callout_id,
            Reply {
                status,
                body: &body,
            },
        );
    });
}

/// # Safety
/// Called by Envoy on a worker with a config this module made.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: abi::ConfigModulePtr,
    _stream: abi::FilterEnvoyPtr,
) -> abi::FilterModulePtr {
    guard("stream", std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        let config = config.cast::<BillingConfig>();
        // The stream holds one reference; Envoy keeps the config alive
        // while it has streams, and the count makes that explicit.
        Arc::increment_strong_count(config);
        let config = Arc::from_raw(config);
        Box::into_raw(Box::new(BillingStream::new(config)))
            .cast_const()
            .cast()
    })
}

/// # Safety
/// `stream` is a pointer this module returned; called once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: abi::FilterModulePtr) {
    guard("stream destroy", (), || {
        if !stream.is_null() {
            drop(Box::from_raw(stream.cast::<BillingStream>().cast_mut()));
        }
    });
}

/// # Safety
/// Envoy's hook contract: live stream, its worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    guard("request headers", abi::HEADERS_CONTINUE, || {
        stream_of(stream).map_or(abi::HEADERS_CONTINUE, |s| {
            s.on_request_headers(Stream(envoy), end_of_stream)
        })
    })
}

/// # Safety
/// Envoy's hook contract: live stream, its worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    guard("request body", abi::BODY_CONTINUE, || {
        stream_of(stream).map_or(abi::BODY_CONTINUE, |s| {
            s.on_request_body(Stream(envoy), end_of_stream)
        })
    })
}

/// # Safety
/// Envoy's hook contract: live stream, its worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    guard("response headers", abi::HEADERS_CONTINUE, || {
        stream_of(stream).map_or(abi::HEADERS_CONTINUE, |s| {
            s.on_response_headers(Stream(envoy))
        })
    })
}

/// # Safety
/// Envoy's hook contract: live stream, its worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
    end_of_stream: bool,
) -> u32 {
    guard("response body", abi::BODY_CONTINUE, || {
        stream_of(stream).map_or(abi::BODY_CONTINUE, |s| {
            s.on_response_body(Stream(envoy), end_of_stream)
        })
    })
}

/// # Safety
/// Envoy's hook contract: live stream, its worker.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
) {
    guard("stream complete", (), || {
        if let Some(s) = stream_of(stream) {
            s.on_stream_complete(Stream(envoy));
        }
    });
}

/// # Safety
/// Envoy's hook contract: live stream, views valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: abi::FilterEnvoyPtr,
    stream: abi::FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_len: usize,
    chunks: *mut EnvoyBuffer,
    chunks_len: usize,
) {
    guard("reservation answer", (), || {
        let Some(s) = stream_of(stream) else {
            return;
        };
        let (status, body) = envoy::reply(result, headers, headers_len, chunks, chunks_len);
        s.on_callout_done(Stream(envoy), callout_id, status, &body);
    });
}

/// Trailers pass untouched.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: abi::FilterEnvoyPtr,
    _stream: abi::FilterModulePtr,
) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: abi::FilterEnvoyPtr,
    _stream: abi::FilterModulePtr,
) -> u32 {
    abi::TRAILERS_CONTINUE
}

// Hooks Envoy 1.40 requires for features this filter does not use
// (streaming callouts, per-stream schedulers, terminal-filter watermarks).
macro_rules! unused_hooks {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_envoy: abi::FilterEnvoyPtr, _stream: abi::FilterModulePtr $(, _: $arg)*) {}
    )*};
}
unused_hooks!(
    envoy_dynamic_module_on_http_filter_http_stream_headers(u64, *mut c_void, usize, bool),
    envoy_dynamic_module_on_http_filter_http_stream_data(u64, *const c_void, usize, bool),
    envoy_dynamic_module_on_http_filter_http_stream_trailers(u64, *mut c_void, usize),
    envoy_dynamic_module_on_http_filter_http_stream_complete(u64),
    envoy_dynamic_module_on_http_filter_http_stream_reset(u64, u32),
    envoy_dynamic_module_on_http_filter_scheduled(u64),
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(),
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_hook_returns_its_fallback_instead_of_unwinding_into_envoy() {
        let status = guard("request headers", abi::HEADERS_CONTINUE, || -> u32 {
            panic!("a bug in a hook")
        });
        assert_eq!(status, abi::HEADERS_CONTINUE);
        assert_eq!(guard("ok", 0, || 7), 7);
    }

    #[test]
    fn a_process_without_the_callbacks_is_named_at_load() {
        // The test binary is not Envoy: every callback is missing, so
        // program init (which loads only when this is empty) refuses.
        let missing = abi::missing_callbacks();
        assert_eq!(missing.len(), abi::CALLBACKS.len());
        assert!(missing.contains(&"envoy_dynamic_module_callback_log_v2"));
    }
}

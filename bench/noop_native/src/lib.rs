//! No-op Envoy dynamic module (HTTP filter): the cost of hosting any native
//! filter in Envoy 1.40. Every hook returns Continue and touches nothing.
//! Signatures follow the dynamic-module ABI v0.2.0 (native/src/abi.rs).
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

#[repr(C)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

type Ep = *mut c_void;
type Mp = *const c_void;

static ABI_VERSION: &[u8] = b"v0.2.0\0";
/// Any non-null pointer: the filter has no state.
static TOKEN: u8 = 0;

fn token() -> *const c_void {
    std::ptr::addr_of!(TOKEN).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config: *mut c_void,
    _name: EnvoyBuffer,
    _value: EnvoyBuffer,
) -> *const c_void {
    token()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_config: *const c_void, _f: Ep) -> Mp {
    token()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_m: Mp) {}

macro_rules! continue_hooks {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_f: Ep, _m: Mp $(, _: $arg)*) -> u32 { 0 }
    )*};
}
continue_hooks!(
    envoy_dynamic_module_on_http_filter_request_headers(bool),
    envoy_dynamic_module_on_http_filter_request_body(bool),
    envoy_dynamic_module_on_http_filter_request_trailers(),
    envoy_dynamic_module_on_http_filter_response_headers(bool),
    envoy_dynamic_module_on_http_filter_response_body(bool),
    envoy_dynamic_module_on_http_filter_response_trailers(),
);

macro_rules! empty_hooks {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {$(
        #[no_mangle]
        pub extern "C" fn $name(_f: Ep, _m: Mp $(, _: $arg)*) {}
    )*};
}
empty_hooks!(
    envoy_dynamic_module_on_http_filter_stream_complete(),
    envoy_dynamic_module_on_http_filter_http_callout_done(u64, u32, *mut c_void, usize, *mut c_void, usize),
    envoy_dynamic_module_on_http_filter_http_stream_headers(u64, *mut c_void, usize, bool),
    envoy_dynamic_module_on_http_filter_http_stream_data(u64, *const c_void, usize, bool),
    envoy_dynamic_module_on_http_filter_http_stream_trailers(u64, *mut c_void, usize),
    envoy_dynamic_module_on_http_filter_http_stream_complete(u64),
    envoy_dynamic_module_on_http_filter_http_stream_reset(u64, u32),
    envoy_dynamic_module_on_http_filter_scheduled(u64),
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(),
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(),
);

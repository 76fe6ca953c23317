//! LLM usage-billing filter for Envoy: the pure core and its proxy-wasm host.
//!
//! Everything except `host` is plain Rust with no host calls so it can be
//! unit-tested natively and shared with the native dynamic module
//! (`native/`); `host` only moves bytes between Envoy's wasm ABI and it, so
//! it is compiled for wasm only.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod capture;
pub mod config;
pub mod deny_share;
pub mod enforce;
pub mod eventstream;
pub mod providers;
pub mod queue;
pub mod record;
pub mod request;
pub mod reserve;
pub mod sparse;
pub mod sse;
pub mod tracker;
pub mod typed;

#[cfg(target_arch = "wasm32")]
mod host;

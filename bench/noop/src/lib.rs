//! No-op proxy-wasm HTTP filter: the cost of hosting any wasm filter in Envoy.
//! Every callback keeps the default, which returns Continue.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;
impl Context for NoopRoot {}
impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }
}

struct NoopHttp;
impl Context for NoopHttp {}
impl HttpContext for NoopHttp {}

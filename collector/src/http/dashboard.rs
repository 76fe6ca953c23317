//! The spend dashboard: `GET /dashboard` and its static assets, embedded in
//! the binary (no CDN, nothing fetched at run time). The page itself holds
//! no data: it asks for a token (kept in the tab's sessionStorage) and calls
//! the query API with it, so an admin token sees every tenant and a tenant
//! token only its own, as the API enforces.
//!
//! Vendored: uPlot 1.6.32 (MIT, `assets/dashboard/vendor/uPlot.LICENSE`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");
const UPLOT_JS: &str = include_str!("../../assets/dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/dashboard/vendor/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../assets/dashboard/vendor/uPlot.LICENSE");

/// Only same-origin scripts and API calls; uPlot sets element styles.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/dashboard/vendor/uPlot.iife.min.js",
            get(|| async { asset(UPLOT_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/vendor/uPlot.min.css",
            get(|| async { asset(UPLOT_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/dashboard/vendor/uPlot.LICENSE",
            get(|| async { asset(UPLOT_LICENSE, "text/plain; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

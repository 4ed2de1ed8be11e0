//! The web dashboard: one page, its script and its style sheet, compiled into kiln-server.
//!
//! Plain HTML, CSS and vanilla JavaScript from `controlplane/web/`, embedded with
//! `include_str!` and served at `/` (same origin as the JSON API it calls). Why no
//! framework or bundler: data centres running Kiln are often air-gapped (no CDN, no
//! external fonts), the project has no JavaScript build toolchain to keep current, and
//! `kiln-server` must stay one file. Sign-in and CSRF are in [`crate::api::session`]; the
//! page holds no secret but the session's CSRF token (the session id is an HttpOnly cookie).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");
const ICON: &str = include_str!("../../web/icon.svg");

/// Locks the page to its own origin: no inline script, no frames, no foreign requests.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The dashboard routes: `/`, `/ui/app.js`, `/ui/app.css`, `/ui/icon.svg`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
}

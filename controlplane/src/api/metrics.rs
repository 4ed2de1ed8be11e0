//! The HTTP side of [`crate::metrics`]: `GET /metrics` (request series plus machine and run
//! gauges counted from the database at scrape time) and the middleware that times every
//! request and logs one line.

use super::{ApiResult, AppStateRef};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::Row;
use std::fmt::Write;
use std::time::Instant;

/// Middleware: times the request, records it and logs one line (no bodies, no headers).
pub async fn track(State(state): State<AppStateRef>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Labels from fixed sets: a stranger's made-up method or path adds no series.
    let method = crate::metrics::method_label(req.method().as_str());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.observe(method, &route, status, secs);
    tracing::info!(target: "kiln::http", method, %route, status, ms = (secs * 1000.0) as u64, "request");
    resp
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppStateRef>) -> ApiResult<Response> {
    let mut out = String::new();
    state.metrics.render(&mut out);
    out.push_str("# HELP kiln_machines Machines by stored state.\n# TYPE kiln_machines gauge\n");
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM machines GROUP BY state")
        .fetch_all(&state.db.pool)
        .await?;
    for row in rows {
        let st: String = row.try_get("state")?;
        let n: i64 = row.try_get("n")?;
        let _ = writeln!(out, "kiln_machines{{state=\"{st}\"}} {n}");
    }
    out.push_str("# HELP kiln_runs Provisioning runs by status.\n# TYPE kiln_runs gauge\n");
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
        .fetch_all(&state.db.pool)
        .await?;
    for row in rows {
        let st: String = row.try_get("status")?;
        let n: i64 = row.try_get("n")?;
        let _ = writeln!(out, "kiln_runs{{status=\"{st}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

//! Vigil's web UI. For now a single start page listing the APIs this server answers; the full UI
//! (explorers, dashboards) is built on top of these routes.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

const START_PAGE: &str = include_str!("start.html");

/// UI routes. They never overlap the API prefixes (`/api`, `/loki`, `/jaeger`, `/tempo`, `/apis`, `/-/`, `/metrics`).
pub fn routes() -> Router {
    Router::new().route("/", get(|| async { Html(START_PAGE) }))
}

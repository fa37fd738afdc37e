//! Vigil's web UI and dashboards. The UI (TypeScript under `ui/`, bundled by `build.rs`) is embedded into
//! the binary and served under `/ui/`; every page path answers with the same `index.html`, and the client
//! routes from the URL. Dashboards are JSON files: the bundled ones under `bundled/`, embedded too, and any
//! a user drops into a directory given to [`routes`].

pub mod grafana;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use serde::Serialize;

pub use model::Dashboard;

/// The built UI (`ui/dist`).
#[derive(RustEmbed)]
#[folder = "ui/dist"]
struct Ui;

/// The bundled dashboards.
#[derive(RustEmbed)]
#[folder = "bundled"]
struct Bundled;

/// A dashboard in the listing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Listing {
    /// The file name without `.json`; the page is `/ui/dashboards/<id>`.
    pub id: String,
    /// The dashboard's title.
    pub title: String,
    /// The dashboard's description.
    pub description: String,
    /// `bundled`, or the path of the user's file.
    pub source: String,
}

/// The bundled dashboards, by id, in file-name order.
pub fn bundled() -> Vec<(String, Dashboard)> {
    let mut names: Vec<_> = Bundled::iter().filter(|n| n.ends_with(".json")).collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let file = Bundled::get(&name)?;
            let dashboard = Dashboard::parse(&name, &file.data).expect("bundled dashboards are checked by tests");
            Some((name.trim_end_matches(".json").to_owned(), dashboard))
        })
        .collect()
}

/// The user's dashboards in `dir` (`*.json`); a file that does not parse is logged and left out.
fn user_dashboards(dir: &Path) -> Vec<(String, Dashboard, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let id = path.file_stem()?.to_str()?.to_owned();
            let text = std::fs::read(&path).ok()?;
            match Dashboard::parse(&path.display().to_string(), &text) {
                Ok(dashboard) => Some((id, dashboard, path)),
                Err(error) => {
                    tracing::warn!(%error, "dashboard file skipped");
                    None
                }
            }
        })
        .collect()
}

/// Every dashboard: the user's first, so a user file with a bundled id replaces the bundled one.
fn all_dashboards(dir: Option<&Path>) -> Vec<(Listing, Dashboard)> {
    let listed = |id: String, dashboard: Dashboard, source: String| {
        let listing =
            Listing { id, title: dashboard.title.clone(), description: dashboard.description.clone(), source };
        (listing, dashboard)
    };
    let mut out: Vec<(Listing, Dashboard)> = dir
        .map(user_dashboards)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, dashboard, path)| listed(id, dashboard, path.display().to_string()))
        .collect();
    for (id, dashboard) in bundled() {
        if !out.iter().any(|(l, _)| l.id == id) {
            out.push(listed(id, dashboard, "bundled".into()));
        }
    }
    out
}

type Dir = Arc<Option<PathBuf>>;

/// Every dashboard, read off the async threads (the user's files are read on each call).
async fn dashboards(dir: Dir) -> Vec<(Listing, Dashboard)> {
    tokio::task::spawn_blocking(move || all_dashboards(dir.as_deref())).await.unwrap_or_default()
}

async fn list(State(dir): State<Dir>) -> Response {
    let listings: Vec<Listing> = dashboards(dir).await.into_iter().map(|(l, _)| l).collect();
    axum::Json(listings).into_response()
}

async fn one(State(dir): State<Dir>, UrlPath(id): UrlPath<String>) -> Response {
    match dashboards(dir).await.into_iter().find(|(l, _)| l.id == id) {
        Some((_, dashboard)) => axum::Json(dashboard).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": format!("no dashboard {id:?}")})))
            .into_response(),
    }
}

/// An embedded UI file with its content type. Asset names stay the same across builds, so browsers
/// revalidate every file: the ETag is the file's SHA-256, and a match answers 304 without a body.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Ui::get(path) else {
        return (StatusCode::NOT_FOUND, "no such UI asset\n").into_response();
    };
    let etag = format!("\"{}\"", file.metadata.sha256_hash().iter().map(|b| format!("{b:02x}")).collect::<String>());
    let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let common = [(header::ETAG, etag), (header::CACHE_CONTROL, "no-cache".to_owned())];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mime = file.metadata.mimetype().to_owned();
    (common, [(header::CONTENT_TYPE, mime)], file.data.into_owned()).into_response()
}

/// UI routes: `/` redirects to `/ui/`, pages under `/ui/...`, assets under `/ui/assets/`, dashboards under
/// `/ui/api/dashboards`. They never overlap the API prefixes (`/api`, `/loki`, `/jaeger`, `/tempo`,
/// `/apis`, `/-/`, `/metrics`). `user_dir` holds the user's own dashboard files, read on every request.
pub fn routes(user_dir: Option<PathBuf>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { asset("index.html", &headers) }))
        .route(
            "/ui/assets/{*file}",
            get(|UrlPath(file): UrlPath<String>, headers: HeaderMap| async move {
                asset(&format!("assets/{file}"), &headers)
            }),
        )
        .route("/ui/api/dashboards", get(list))
        .route("/ui/api/dashboards/{id}", get(one))
        .route("/ui/{*page}", get(|headers: HeaderMap| async move { asset("index.html", &headers) }))
        .with_state(Arc::new(user_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_dashboard_parses_and_has_its_grafana_twin() {
        let bundled = bundled();
        assert!(bundled.len() >= 4, "expected the cluster, node, pod and self-monitoring dashboards");
        let grafana_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
        for (id, dashboard) in &bundled {
            let expected = grafana::convert(id, dashboard);
            let path = grafana_dir.join(format!("{id}.json"));
            if std::env::var_os("VIGIL_BLESS").is_some() {
                std::fs::write(&path, serde_json::to_string_pretty(&expected).unwrap() + "\n").unwrap();
            }
            let committed: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{}: {e} (regenerate with VIGIL_BLESS=1)", path.display()));
            assert_eq!(committed, expected, "{} is stale: regenerate with VIGIL_BLESS=1", path.display());
        }
    }

    #[test]
    fn a_user_file_adds_a_dashboard_and_can_replace_a_bundled_one() {
        let dir = tempfile::tempdir().unwrap();
        let own = r#"{"title":"Mine","panels":[{"title":"up","type":"graph","query":"up"}]}"#;
        std::fs::write(dir.path().join("mine.json"), own).unwrap();
        std::fs::write(dir.path().join("vigil.json"), own).unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let all = all_dashboards(Some(dir.path()));
        let ids: Vec<&str> = all.iter().map(|(l, _)| l.id.as_str()).collect();
        assert!(ids.contains(&"mine"));
        assert!(!ids.contains(&"broken"));
        assert_eq!(ids.iter().filter(|id| **id == "vigil").count(), 1);
        let vigil = all.iter().find(|(l, _)| l.id == "vigil").unwrap();
        assert_eq!(vigil.1.title, "Mine");
        assert_eq!(all.len(), bundled().len() + 1);
    }

    #[test]
    fn assets_are_revalidated_by_their_hash() {
        let first = asset("assets/app.js", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], "text/javascript");
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(asset("assets/app.js", &headers).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, "\"stale\"".parse().unwrap());
        assert_eq!(asset("assets/app.js", &headers).status(), StatusCode::OK);
        assert_eq!(asset("assets/missing.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_ui_is_embedded_with_its_assets() {
        let index = Ui::get("index.html").expect("ui/dist/index.html is built by build.rs");
        let html = String::from_utf8_lossy(&index.data);
        for asset in ["/ui/assets/app.js", "/ui/assets/app.css"] {
            assert!(html.contains(asset), "index.html does not load {asset}");
            assert!(Ui::get(asset.trim_start_matches("/ui/")).is_some(), "{asset} is not embedded");
        }
    }
}

//! What every HTTP listener shares: bearer-token scopes, request telemetry, and TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::Tokens;

/// Which token a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Probes and the UI's static pages: never need a token.
    Public,
    /// Writes of telemetry.
    Ingest,
    /// Reads.
    Query,
    /// Reload, shutdown, deletion.
    Admin,
}

impl Scope {
    /// The scope of a request path.
    pub fn of(path: &str) -> Scope {
        const INGEST: [&str; 6] =
            ["/api/v1/write", "/loki/api/v1/push", "/api/v2/spans", "/v1/traces", "/v1/metrics", "/v1/logs"];
        let ui_page = path == "/" || path == "/ui" || (path.starts_with("/ui/") && !path.starts_with("/ui/api/"));
        if path == "/-/healthy" || path == "/-/ready" || ui_page {
            return Scope::Public;
        }
        let otlp_grpc = path.starts_with("/opentelemetry.proto.collector.");
        if INGEST.contains(&path) || path.starts_with("/api/v1/otlp/") || otlp_grpc {
            return Scope::Ingest;
        }
        if path.starts_with("/-/") || path.starts_with("/api/v1/admin/") {
            return Scope::Admin;
        }
        Scope::Query
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Public => "public",
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: String) -> Response {
    let body = json!({"status": "error", "errorType": "unauthorized", "error": message});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vigil\""));
    response
}

/// Middleware: rejects requests without the bearer token their path's scope requires.
pub async fn require_token(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    let scope = Scope::of(request.uri().path());
    let expected = match scope {
        Scope::Public => None,
        Scope::Ingest => tokens.ingest.as_deref(),
        Scope::Query => tokens.query.as_deref(),
        Scope::Admin => tokens.admin.as_deref(),
    };
    let Some(expected) = expected else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        None => {
            metrics::counter!("vigil_http_unauthorized_total", "scope" => scope.name()).increment(1);
            unauthorized(format!(
                "missing bearer token: the {} API needs 'Authorization: Bearer <token>'",
                scope.name()
            ))
        }
        Some(token) if !constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            metrics::counter!("vigil_http_unauthorized_total", "scope" => scope.name()).increment(1);
            unauthorized(format!("wrong bearer token for the {} API", scope.name()))
        }
        Some(_) => next.run(request).await,
    }
}

/// Middleware: counts requests by route and status code, and times them.
pub async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    metrics::counter!("vigil_http_requests_total", "route" => route.clone(), "code" => code).increment(1);
    metrics::histogram!("vigil_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Loads a PEM certificate chain and key into a rustls server config.
pub fn tls_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert_pem =
        std::fs::read(cert_file).with_context(|| format!("cannot read TLS certificate {}", cert_file.display()))?;
    let key_pem = std::fs::read(key_file).with_context(|| format!("cannot read TLS key {}", key_file.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in {}", cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate found in {}", cert_file.display());
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("invalid PEM in {}", key_file.display()))?
        .with_context(|| format!("no private key found in {}", key_file.display()))?;
    server_tls(certs, key)
}

/// A rustls server config over a certificate made now and signed by itself, for `localhost` and this
/// host's name: what a listener uses when its client does not verify the server (the Kubernetes API
/// aggregator with `insecureSkipTLSVerify`) and no certificate was configured.
pub fn self_signed_tls_config() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_owned());
    }
    let certified = rcgen::generate_simple_self_signed(names).context("cannot make a self-signed certificate")?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    server_tls(vec![certified.cert.der().clone()], key.into())
}

fn server_tls(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not form a valid pair")?;
    // h2 first so gRPC clients negotiate HTTP/2; browsers and curl may pick either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections have completed a TLS handshake. Handshakes run on their own tasks
/// (bounded by a timeout), so a slow client never holds up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            metrics::counter!("vigil_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%peer, %error, "tls handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local_addr, accept_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        assert_eq!(Scope::of("/-/ready"), Scope::Public);
        assert_eq!(Scope::of("/ui/logs"), Scope::Public);
        assert_eq!(Scope::of("/ui/assets/app.js"), Scope::Public);
        assert_eq!(Scope::of("/ui/api/dashboards"), Scope::Query);
        assert_eq!(Scope::of("/api/v1/write"), Scope::Ingest);
        assert_eq!(Scope::of("/api/v1/otlp/v1/metrics"), Scope::Ingest);
        assert_eq!(Scope::of("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"), Scope::Ingest);
        assert_eq!(Scope::of("/apis/metrics.k8s.io/v1beta1/nodes"), Scope::Query);
        assert_eq!(Scope::of("/api/v1/query"), Scope::Query);
        assert_eq!(Scope::of("/metrics"), Scope::Query);
        assert_eq!(Scope::of("/-/reload"), Scope::Admin);
        assert_eq!(Scope::of("/api/v1/admin/tsdb/delete_series"), Scope::Admin);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}

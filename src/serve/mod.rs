//! `steward serve` and `[serve]` in the daemon: a read-only HTTP server (axum on the
//! tokio runtime steward already has) with three pages: `/` (the status page), `/metrics`
//! (the Prometheus textfile's text) and `/health` (JSON; 503 when something is critical).
//!
//! Nothing can be changed over HTTP: only GET and HEAD are routed. Loopback by default;
//! any other address needs a token (config validation refuses it without one), sent as a
//! bearer token or as the password of basic auth. Without a token the Host header must
//! name a loopback address, so a web page that rebinds its DNS name to 127.0.0.1 cannot
//! read the page through the visitor's browser.

pub mod chart;
pub mod page;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Config;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error(
        "{addr} is reachable from other machines and no token file is set ([serve] \
         token-file); refusing to serve"
    )]
    NoToken { addr: SocketAddr },
}

impl ServeError {
    /// Whether the configuration is what is wrong (exit 78), not the moment.
    pub fn is_config(&self) -> bool {
        !matches!(self, ServeError::Bind { .. })
    }
}

/// Gives the server the configuration to answer with (the daemon's changes on reload).
pub type ConfigSource = Arc<dyn Fn() -> Config + Send + Sync>;

#[derive(Clone)]
struct App {
    config: ConfigSource,
    token: Option<Arc<str>>,
    csp: Arc<str>,
    /// One catalog read at a time: a burst of requests waits its turn instead of opening
    /// a connection (and a thread, and its allocator arena) each.
    one_at_a_time: Arc<tokio::sync::Semaphore>,
}

/// Reads the token from `path` ([`crate::config::read_token`]'s rules).
pub fn read_token(path: &Path) -> Result<String, ServeError> {
    crate::config::read_token(path).map_err(|message| ServeError::Token {
        path: path.to_path_buf(),
        message,
    })
}

/// The Content-Security-Policy: nothing from anywhere, the one inline stylesheet by hash.
fn csp() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(page::CSS));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src data:; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// A bound, not yet serving, server.
pub struct Bound {
    listener: std::net::TcpListener,
    app: App,
}

impl Bound {
    /// The address it listens on (the port chosen when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// Checks the token rules for `addr` and binds it.
pub fn bind(
    addr: SocketAddr,
    token_file: Option<&Path>,
    config: ConfigSource,
) -> Result<Bound, ServeError> {
    let token = token_file.map(read_token).transpose()?;
    if token.is_none() && !crate::config::is_loopback(&addr) {
        return Err(ServeError::NoToken { addr });
    }
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(Bound {
        listener,
        app: App {
            config,
            token: token.map(Into::into),
            csp: csp().into(),
            one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)),
        },
    })
}

/// Connections served at once; more wait in the kernel's backlog, holding none of the
/// process's file descriptors (the daemon's jobs need those).
const MAX_CONNECTIONS: usize = 32;
/// A client gets this long to send its request's headers...
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and a connection this long in all: one request, no keep-alive, so idle or
/// trickling connections cannot hold the server.
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves until `shutdown` completes.
pub async fn serve(
    bound: Bound,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Bound { listener, app } = bound;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let router = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return Ok(()),
            },
            () = &mut shutdown => return Ok(()),
        };
        let stream = tokio::select! {
            r = listener.accept() => {
                // Out of descriptors (or a connection reset before it was taken): wait
                // a moment rather than spin or stop serving.
                let Ok((stream, _)) = r else {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                };
                stream
            }
            () = &mut shutdown => return Ok(()),
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// Equal without telling by its timing how much of it matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the token, as `Bearer TOKEN` or as basic auth's password.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110).
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(rest.trim().as_bytes(), token.as_bytes());
    }
    if let Some(b) = scheme.eq_ignore_ascii_case("basic").then_some(rest) {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else {
            return false;
        };
        let Some(colon) = raw.iter().position(|&c| c == b':') else {
            return false;
        };
        return same(&raw[colon + 1..], token.as_bytes());
    }
    false
}

/// Whether `host` (a Host header or a URI's authority) names this machine
/// (`localhost`, `127.x`, `[::1]`, with or without a port).
fn local_name(host: &str) -> bool {
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return false;
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request says, once, that it is for this machine: one Host header naming
/// it, and an absolute request URI (if any) naming it too.
fn local_host(headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().is_ok_and(local_name),
        _ => false,
    }
}

/// Authentication, and the headers every answer carries.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let allowed = match &app.token {
        Some(t) => authorized(req.headers(), t),
        None => {
            local_host(req.headers())
                && req.uri().authority().is_none_or(|a| local_name(a.as_str()))
        }
    };
    let mut resp = if allowed {
        next.run(req).await
    } else if app.token.is_some() {
        let mut r = (StatusCode::UNAUTHORIZED, "a token is needed\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"steward\", charset=\"UTF-8\""),
        );
        r
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this page answers only to localhost; use an SSH tunnel\n",
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&app.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Runs `f` on a blocking thread (the catalog is SQLite), its error as a 500.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Config) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let source = app.config.clone();
    let Ok(_turn) = app.one_at_a_time.clone().acquire_owned().await else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response());
    };
    match tokio::task::spawn_blocking(move || f(&source())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()),
    }
}

async fn index(State(app): State<App>) -> Response {
    match blocking(&app, |cfg| {
        page::gather(cfg)
            .map(|p| page::html(&p))
            .map_err(|e| format!("{e:#}"))
    })
    .await
    {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(app): State<App>) -> Response {
    match blocking(&app, |cfg| {
        crate::catalog::Catalog::open(&cfg.state_dir)
            .and_then(|c| crate::metrics::render(cfg, &c))
            .map_err(|e| format!("{e:#}"))
    })
    .await
    {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn health(State(app): State<App>) -> Response {
    match blocking(&app, |cfg| page::health(cfg).map_err(|e| format!("{e:#}"))).await {
        Ok((critical, body)) => {
            let code = if critical {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (
                code,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_string_pretty(&body).unwrap_or_default(),
            )
                .into_response()
        }
        // Unknown is not healthy.
        Err(r) => (StatusCode::SERVICE_UNAVAILABLE, r.into_body()).into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_as_bearer_or_basic_password_only() {
        let t = "0123456789abcdef";
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, t));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert!(authorized(&h, t));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdeX"),
        );
        assert!(!authorized(&h, t));
        // steward:0123456789abcdef
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c3Rld2FyZDowMTIzNDU2Nzg5YWJjZGVm"),
        );
        assert!(authorized(&h, t));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(!authorized(&h, t));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer 0123456789abcdef"),
        );
        assert!(authorized(&h, t), "the scheme is case-insensitive");
    }

    #[test]
    fn only_loopback_host_names_pass_without_a_token() {
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            local_host(&h)
        };
        assert!(host("127.0.0.1:9910"));
        assert!(host("localhost:9910"));
        assert!(host("[::1]:9910"));
        assert!(!host("evil.example:9910"));
        assert!(!host("127.0.0.1.evil.example"));
        assert!(!local_host(&HeaderMap::new()));
        assert!(!host("127.0.0.1:9910 evil.example"));
        let mut two = HeaderMap::new();
        two.append(header::HOST, HeaderValue::from_static("localhost"));
        two.append(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(!local_host(&two), "two Host headers");
    }
}

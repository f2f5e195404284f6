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
    #[error("cannot read the token file {path}")]
    TokenRead {
        path: PathBuf,
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

/// Reads the token from `path`: one line, at least 16 characters, in a file others cannot
/// read.
pub fn read_token(path: &Path) -> Result<String, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ServeError::TokenRead {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(ServeError::Token {
            path: path.to_path_buf(),
            message: "can be read by every user; chmod 600 it".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::TokenRead {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(ServeError::Token {
            path: path.to_path_buf(),
            message: "must hold one token of 16 or more characters without spaces (e.g. \
                      `openssl rand -hex 24`)"
                .into(),
        });
    }
    Ok(token.to_string())
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
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
    if let Some(t) = value.strip_prefix("Bearer ") {
        return same(t.trim().as_bytes(), token.as_bytes());
    }
    if let Some(b) = value.strip_prefix("Basic ") {
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

/// Whether the Host header names this machine (`localhost`, `127.x`, `[::1]`).
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
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

/// Authentication, and the headers every answer carries.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let allowed = match &app.token {
        Some(t) => authorized(req.headers(), t),
        None => local_host(req.headers()),
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
    }
}

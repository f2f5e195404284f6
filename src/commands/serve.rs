//! `steward serve` (the status page until stopped) and `steward fleet` (the fleet's
//! status objects, read now).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;

/// `steward serve [--listen ADDR]`.
pub fn serve(cfg: Config, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let addr = match listen.or(cfg.serve.listen) {
        Some(a) => a,
        None => crate::config::DEFAULT_LISTEN.parse()?,
    };
    let token_file = cfg.serve.token_file.clone();
    let shared = Arc::new(cfg);
    let source: crate::serve::ConfigSource = Arc::new(move || (*shared).clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let _guard = rt.enter();
    let bound = crate::serve::bind(addr, token_file.as_deref(), source)
        .with_context(|| format!("serving on {addr}"))?;
    if let Some(a) = bound.local_addr() {
        println!("steward: serving http://{a}/ (also /metrics and /health); Ctrl-C stops");
    }
    rt.block_on(crate::serve::serve(bound, stopped()))
        .with_context(|| format!("serving on {addr}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `steward fleet [--json]`.
pub fn fleet(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let Some(fleet) = &cfg.fleet else {
        anyhow::bail!("there is no [fleet] in the configuration; see the README's Fleet section");
    };
    let catalog = crate::catalog::Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
    let now = crate::clock::now();
    let views = crate::fleet::read(cfg, &catalog, now)
        .with_context(|| format!("reading the fleet from offsite {}", fleet.target))?;
    if json {
        super::print_json(&views)?;
    } else {
        crate::render::status::fleet(&mut std::io::stdout().lock(), &views, now)?;
    }
    let bad = crate::fleet::readings(&views, fleet)
        .iter()
        .any(|r| r.severity != crate::severity::Severity::Ok);
    Ok(ExitCode::from(if bad {
        crate::error::FAILED
    } else {
        crate::error::OK
    }))
}

//! `steward alert test` and `steward alert flush`.

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::AlertCommand;
use crate::config::Config;

pub fn run(cfg: &Config, cmd: AlertCommand) -> anyhow::Result<ExitCode> {
    if cfg.alerts.channels().is_empty() {
        bail!(
            "no [alerts.email], [alerts.ntfy] or [alerts.webhook] in {}: nowhere to send alerts",
            cfg.origin
        );
    }
    match cmd {
        AlertCommand::Test => {
            let Some(email) = &cfg.alerts.email else {
                bail!("no [alerts.email] in {}: nowhere to send mail", cfg.origin);
            };
            let host = crate::fsutil::hostname();
            let subject = format!("[steward] {host}: test mail");
            let body = format!(
                "This is a test mail from steward on {host}.\nIf you read this, alerts reach {}.\n",
                email.to.join(", ")
            );
            crate::alerts::send(email, &subject, &body).context("sending the test mail")?;
            println!(
                "test mail accepted by {}:{} for {}",
                email.host,
                email.port,
                email.to.join(", ")
            );
        }
        AlertCommand::Flush => {
            let catalog = super::open_catalog(cfg)?;
            // Everything waiting, whatever its backoff; after any delivery under way.
            let how = crate::alerts::Flush {
                wait: true,
                now_or_never: true,
            };
            let d = crate::alerts::deliver(
                &catalog,
                &cfg.alerts,
                &cfg.state_dir,
                crate::clock::now(),
                how,
            )?;
            println!(
                "{} sent, {} failed, {} waiting",
                d.sent, d.failed, d.waiting
            );
            if let Some(e) = d.last_error {
                bail!("{e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

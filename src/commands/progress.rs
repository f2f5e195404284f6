//! Progress for long work: a bar when stderr is a terminal, plain lines otherwise (for
//! journald and launchd logs, which keep their own timestamps).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::backup::Progress;

/// Picks the bar on a terminal, plain lines elsewhere.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar {
            bar: Mutex::new(None),
        })
    } else {
        Box::new(Lines)
    }
}

struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        let mut slot = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        let bar = ProgressBar::new(total);
        // Without a total (a first backup is not surveyed first) there is no bar to fill.
        let template = if total > 0 {
            "{msg:30!} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}"
        } else {
            "{msg:30!} {binary_bytes:>10} {binary_bytes_per_sec:>12}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_string());
        *slot = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            b.inc(n);
        }
    }
    fn note(&self, message: &str) {
        match self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            Some(b) => b.println(format!("note: {message}")),
            None => eprintln!("note: {message}"),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            b.finish_and_clear();
        }
    }
}

struct Lines;

impl Progress for Lines {
    fn phase(&self, name: &str, total: u64) {
        if total > 0 {
            eprintln!("steward: {name} ({})", crate::render::bytes(total));
        } else {
            eprintln!("steward: {name}");
        }
    }
    fn advance(&self, _: u64) {}
    fn note(&self, message: &str) {
        eprintln!("steward: note: {message}");
    }
}

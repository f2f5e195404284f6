//! Installing what `packaging` generates: the files written, recorded in a manifest in the
//! state dir, enabled with the service manager's own commands (or those commands shown when
//! no service manager runs here); uninstalling removes exactly the manifest's files. Each
//! step is told to the caller's `say` as it happens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LaunchdOptions, Mode, SystemdOptions};
use crate::config::{Config, Origin};
use crate::services::{Runner, SystemRunner};

/// Which service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

/// What to install.
pub enum Request {
    Systemd {
        user: bool,
        mode: Mode,
        unit_dir: Option<PathBuf>,
        binary: Option<PathBuf>,
        randomized_delay: String,
    },
    Launchd {
        daemon: bool,
        mode: Mode,
        plist_dir: Option<PathBuf>,
        binary: Option<PathBuf>,
    },
}

/// What went wrong installing or uninstalling; each names its path or command.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("install needs a config file: pass --config or create /etc/steward/steward.toml")]
    NoConfigFile,
    #[error("finding steward's own path")]
    OwnPath(#[source] std::io::Error),
    #[error("{0}")]
    Generate(String),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("running `{command}`")]
    Start {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    files: Vec<PathBuf>,
    /// Commands that undo the enabling, run before the files go.
    undo: Vec<Vec<String>>,
    /// Commands run after the files are gone.
    after: Vec<Vec<String>>,
}

fn manifest_path(cfg: &Config, target: Manager) -> PathBuf {
    let name = match target {
        Manager::Systemd => "installed-systemd.json",
        Manager::Launchd => "installed-launchd.json",
    };
    cfg.state_dir.join(name)
}

fn running(target: Manager) -> bool {
    match target {
        Manager::Systemd => Path::new("/run/systemd/system").exists(),
        Manager::Launchd => cfg!(target_os = "macos"),
    }
}

/// Runs the commands when the service manager is there, else shows them.
fn run_all(
    cmds: &[Vec<String>],
    live: bool,
    dry_run: bool,
    say: &dyn Fn(&str),
) -> Result<(), InstallError> {
    for c in cmds {
        let command = c.join(" ");
        if dry_run || !live {
            say(&format!(
                "{}: {command}",
                if dry_run {
                    "would run"
                } else {
                    "run yourself (no service manager here)"
                }
            ));
            continue;
        }
        let out = SystemRunner
            .run(c, Duration::from_mins(2))
            .map_err(|source| InstallError::Start {
                command: command.clone(),
                source,
            })?;
        if !out.success {
            return Err(InstallError::Command {
                command,
                output: out.output.trim().to_string(),
            });
        }
        say(&format!("ran: {command}"));
    }
    Ok(())
}

/// Whether systemd finds unit files in `dir` by name (its search path, systemd.unit(5)).
fn on_unit_path(dir: &Path, user: bool, home: &Path) -> bool {
    let system = [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ];
    let user_dirs = [
        home.join(".config/systemd/user"),
        home.join(".local/share/systemd/user"),
        PathBuf::from("/etc/systemd/user"),
        PathBuf::from("/usr/lib/systemd/user"),
        PathBuf::from("/usr/local/lib/systemd/user"),
    ];
    let dir = dir.components().collect::<PathBuf>();
    if user {
        user_dirs.contains(&dir)
    } else {
        system.iter().any(|d| Path::new(d) == dir)
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(std::string::ToString::to_string).collect()
}

/// What an install writes and runs.
pub struct Install {
    target: Manager,
    dir: PathBuf,
    generated: super::Generated,
    enable: Vec<Vec<String>>,
    undo: Vec<Vec<String>>,
    after: Vec<Vec<String>>,
    live: bool,
    /// The folder launchd writes the jobs' output to.
    log_dir: Option<PathBuf>,
    /// Worth telling before anything happens (units linked from off the search path).
    pub note: Option<String>,
}

/// Generates the files of `request` and the commands that enable them.
pub fn prepare(cfg: &Config, request: Request) -> Result<Install, InstallError> {
    let config_path = match &cfg.origin {
        Origin::File(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        Origin::Embedded => return Err(InstallError::NoConfigFile),
    };
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let this = std::env::current_exe().map_err(InstallError::OwnPath)?;
    match request {
        Request::Systemd {
            user,
            mode,
            unit_dir,
            binary,
            randomized_delay,
        } => {
            let dir = unit_dir.unwrap_or_else(|| {
                if user {
                    home.join(".config/systemd/user")
                } else {
                    PathBuf::from("/etc/systemd/system")
                }
            });
            let binary = binary.unwrap_or(this);
            let g = super::systemd(
                cfg,
                &SystemdOptions {
                    binary: &binary,
                    config_path: &config_path,
                    mode,
                    user,
                    randomized_delay: &randomized_delay,
                },
            )
            .map_err(InstallError::Generate)?;
            let mut ctl = strs(&["systemctl"]);
            if user {
                ctl.push("--user".into());
            }
            let with = |extra: &[&str], units: &[String]| {
                let mut c = ctl.clone();
                c.extend(strs(extra));
                c.extend(units.iter().cloned());
                c
            };
            // Units outside systemd's search path are not found by name: they are
            // linked into it first (`systemctl link`), or `enable` would fail.
            let mut enable = Vec::new();
            let mut note = None;
            if !on_unit_path(&dir, user, &home) {
                note = Some(format!(
                    "{} is not on systemd's unit search path; the units are linked into it",
                    dir.display()
                ));
                let linked: Vec<String> = g
                    .files
                    .iter()
                    .filter(|f| !f.name.contains('/'))
                    .map(|f| dir.join(&f.name).display().to_string())
                    .collect();
                enable.push(with(&["link"], &linked));
            }
            enable.push(with(&["daemon-reload"], &[]));
            enable.push(with(&["enable", "--now"], &g.enable));
            let undo = vec![with(&["disable", "--now"], &g.enable)];
            let after = vec![with(&["daemon-reload"], &[])];
            Ok(Install {
                target: Manager::Systemd,
                dir,
                generated: g,
                enable,
                undo,
                after,
                live: running(Manager::Systemd),
                log_dir: None,
                note,
            })
        }
        Request::Launchd {
            daemon,
            mode,
            plist_dir,
            binary,
        } => {
            let agent = !daemon;
            let dir = plist_dir.unwrap_or_else(|| {
                if agent {
                    home.join("Library/LaunchAgents")
                } else {
                    PathBuf::from("/Library/LaunchDaemons")
                }
            });
            let log_dir = if agent {
                home.join("Library/Logs/steward")
            } else {
                PathBuf::from("/var/log/steward")
            };
            let binary = binary.unwrap_or(this);
            let g = super::launchd(
                cfg,
                &LaunchdOptions {
                    binary: &binary,
                    config_path: &config_path,
                    mode,
                    agent,
                    log_dir: &log_dir,
                },
            )
            .map_err(InstallError::Generate)?;
            // SAFETY: getuid has no preconditions.
            let domain = if agent {
                format!("gui/{}", unsafe { libc::getuid() })
            } else {
                "system".into()
            };
            let enable: Vec<Vec<String>> = g
                .enable
                .iter()
                .map(|f| {
                    vec![
                        "launchctl".into(),
                        "bootstrap".into(),
                        domain.clone(),
                        dir.join(f).display().to_string(),
                    ]
                })
                .collect();
            let undo: Vec<Vec<String>> = g
                .enable
                .iter()
                .map(|f| {
                    vec![
                        "launchctl".into(),
                        "bootout".into(),
                        format!("{domain}/{}", f.trim_end_matches(".plist")),
                    ]
                })
                .collect();
            Ok(Install {
                target: Manager::Launchd,
                dir,
                generated: g,
                enable,
                undo,
                after: Vec::new(),
                live: running(Manager::Launchd),
                log_dir: Some(log_dir),
                note: None,
            })
        }
    }
}

/// Writes the files, records them, enables them (`dry_run`: shows the files and commands,
/// writes and runs nothing).
pub fn install(
    cfg: &Config,
    plan: Install,
    dry_run: bool,
    say: &dyn Fn(&str),
) -> Result<(), InstallError> {
    let Install {
        target,
        dir,
        generated,
        enable,
        undo,
        after,
        live,
        log_dir,
        note: _,
    } = plan;
    let files: Vec<PathBuf> = generated.files.iter().map(|f| dir.join(&f.name)).collect();
    if dry_run {
        for f in &generated.files {
            say(&format!(
                "would write {}:\n{}",
                dir.join(&f.name).display(),
                f.content
            ));
        }
        return run_all(&enable, live, true, say);
    }
    if let Some(d) = &log_dir {
        // launchd writes the jobs' output there; it does not make the folder.
        std::fs::create_dir_all(d).ok();
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    // One install record: an earlier install (another mode, another folder) is undone
    // first for the files this one does not write, so uninstall can remove everything.
    let mpath = manifest_path(cfg, target);
    if let Ok(data) = std::fs::read(&mpath)
        && let Ok(old) = serde_json::from_slice::<Manifest>(&data)
    {
        let stale: Vec<&PathBuf> = old.files.iter().filter(|f| !files.contains(f)).collect();
        if !stale.is_empty() {
            run_all(&old.undo, live, false, say)?;
            for f in stale {
                if remove_installed(f)? {
                    say(&format!(
                        "removed {} (from the earlier install)",
                        f.display()
                    ));
                }
            }
        }
    }
    for f in &generated.files {
        let path = dir.join(&f.name);
        // Drop-ins go in `UNIT.d/`.
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::write(&path, &f.content).map_err(io("writing", &path))?;
        say(&format!("wrote {}", path.display()));
    }
    crate::fsutil::create_private_dir(&cfg.state_dir).map_err(io("creating", &cfg.state_dir))?;
    let manifest = Manifest { files, undo, after };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|source| InstallError::Manifest {
        path: mpath.clone(),
        source,
    })?;
    std::fs::write(&mpath, bytes).map_err(io("writing", &mpath))?;
    run_all(&enable, live, false, say)
}

/// Removes one file an install wrote, and the drop-in folder it made when nothing else is
/// in it; `false` when the file was gone already.
fn remove_installed(f: &Path) -> Result<bool, InstallError> {
    let removed = match std::fs::remove_file(f) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("removing", f)(e)),
    };
    if let Some(parent) = f.parent()
        && parent.extension().is_some_and(|e| e == "d")
    {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(removed)
}

/// Removes exactly what the last install for `target` wrote, after undoing its enabling.
pub fn uninstall(
    cfg: &Config,
    target: Manager,
    dry_run: bool,
    say: &dyn Fn(&str),
) -> Result<(), InstallError> {
    let mpath = manifest_path(cfg, target);
    let data = match std::fs::read(&mpath) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            say(&format!("nothing installed (no {})", mpath.display()));
            return Ok(());
        }
        Err(e) => return Err(io("reading", &mpath)(e)),
    };
    let m: Manifest = serde_json::from_slice(&data).map_err(|source| InstallError::Manifest {
        path: mpath.clone(),
        source,
    })?;
    let live = running(target);
    run_all(&m.undo, live, dry_run, say)?;
    for f in &m.files {
        if dry_run {
            say(&format!("would remove {}", f.display()));
        } else if remove_installed(f)? {
            say(&format!("removed {}", f.display()));
        }
    }
    run_all(&m.after, live, dry_run, say)?;
    if !dry_run {
        std::fs::remove_file(&mpath).map_err(io("removing", &mpath))?;
    }
    Ok(())
}

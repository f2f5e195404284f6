//! `steward install systemd|launchd` and `steward uninstall`: write the generated files,
//! record them in a manifest, enable them; uninstall removes exactly the manifest's files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cli::{InstallCommand, InstallMode, InstallTarget};
use crate::config::{Config, Origin};
use crate::packaging::{self, Mode};
use crate::services::{Runner, SystemRunner};

#[derive(Serialize, Deserialize)]
struct Manifest {
    files: Vec<PathBuf>,
    /// Commands that undo the enabling, run before the files go.
    undo: Vec<Vec<String>>,
    /// Commands run after the files are gone.
    after: Vec<Vec<String>>,
}

fn manifest_path(cfg: &Config, target: InstallTarget) -> PathBuf {
    let name = match target {
        InstallTarget::Systemd => "installed-systemd.json",
        InstallTarget::Launchd => "installed-launchd.json",
    };
    cfg.state_dir.join(name)
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").exists()
}

fn launchd_running() -> bool {
    cfg!(target_os = "macos")
}

/// Runs the commands when the service manager is there, else prints them.
fn run_all(cmds: &[Vec<String>], live: bool, dry_run: bool) -> anyhow::Result<()> {
    for c in cmds {
        if dry_run || !live {
            println!(
                "{}: {}",
                if dry_run {
                    "would run"
                } else {
                    "run yourself (no service manager here)"
                },
                c.join(" ")
            );
            continue;
        }
        let out = SystemRunner.run(c, Duration::from_mins(2))?;
        if !out.success {
            bail!("`{}` failed: {}", c.join(" "), out.output.trim());
        }
        println!("ran: {}", c.join(" "));
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

pub fn install(cfg: &Config, cmd: InstallCommand) -> anyhow::Result<ExitCode> {
    let config_path = match &cfg.origin {
        Origin::File(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        Origin::Embedded => {
            bail!("install needs a config file: pass --config or create /etc/steward/steward.toml")
        }
    };
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let this = std::env::current_exe().context("finding steward's own path")?;
    let mode = |m: InstallMode| match m {
        InstallMode::Timers => Mode::Timers,
        InstallMode::Daemon => Mode::Daemon,
    };
    let (target, dir, generated, enable_cmds, undo, after, live, dry_run) = match cmd {
        InstallCommand::Systemd {
            user,
            system: _,
            mode: m,
            dry_run,
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
            let g = packaging::systemd(
                cfg,
                &packaging::SystemdOptions {
                    binary: &binary,
                    config_path: &config_path,
                    mode: mode(m),
                    user,
                    randomized_delay: &randomized_delay,
                },
            )
            .map_err(anyhow::Error::msg)?;
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
            if !on_unit_path(&dir, user, &home) {
                eprintln!(
                    "steward: note: {} is not on systemd's unit search path; the units are linked into it",
                    dir.display()
                );
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
            (
                InstallTarget::Systemd,
                dir,
                g,
                enable,
                undo,
                after,
                systemd_running(),
                dry_run,
            )
        }
        InstallCommand::Launchd {
            agent: _,
            daemon,
            mode: m,
            dry_run,
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
            let g = packaging::launchd(
                cfg,
                &packaging::LaunchdOptions {
                    binary: &binary,
                    config_path: &config_path,
                    mode: mode(m),
                    agent,
                    log_dir: &log_dir,
                },
            )
            .map_err(anyhow::Error::msg)?;
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
            if !dry_run {
                std::fs::create_dir_all(&log_dir).ok();
            }
            (
                InstallTarget::Launchd,
                dir,
                g,
                enable,
                undo,
                Vec::new(),
                launchd_running(),
                dry_run,
            )
        }
    };
    let files: Vec<PathBuf> = generated.files.iter().map(|f| dir.join(&f.name)).collect();
    if dry_run {
        for f in &generated.files {
            println!(
                "would write {}:\n{}",
                dir.join(&f.name).display(),
                f.content
            );
        }
        run_all(&enable_cmds, live, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // One install record: an earlier install (another mode, another folder) is undone
    // first for the files this one does not write, so uninstall can remove everything.
    let mpath = manifest_path(cfg, target);
    if let Ok(data) = std::fs::read(&mpath)
        && let Ok(old) = serde_json::from_slice::<Manifest>(&data)
    {
        let stale: Vec<&PathBuf> = old.files.iter().filter(|f| !files.contains(f)).collect();
        if !stale.is_empty() {
            run_all(&old.undo, live, false)?;
            for f in stale {
                if remove_installed(f)? {
                    println!("removed {} (from the earlier install)", f.display());
                }
            }
        }
    }
    for f in &generated.files {
        let path = dir.join(&f.name);
        // Drop-ins go in `UNIT.d/`.
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &f.content).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    crate::fsutil::create_private_dir(&cfg.state_dir)?;
    let manifest = Manifest { files, undo, after };
    std::fs::write(&mpath, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", mpath.display()))?;
    run_all(&enable_cmds, live, false)?;
    Ok(ExitCode::SUCCESS)
}

/// Removes one file an install wrote, and the drop-in folder it made when nothing else is
/// in it; `false` when the file was gone already.
fn remove_installed(f: &Path) -> anyhow::Result<bool> {
    let removed = match std::fs::remove_file(f) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
    };
    if let Some(parent) = f.parent()
        && parent.extension().is_some_and(|e| e == "d")
    {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(removed)
}

pub fn uninstall(cfg: &Config, target: InstallTarget, dry_run: bool) -> anyhow::Result<ExitCode> {
    let mpath = manifest_path(cfg, target);
    let data = match std::fs::read(&mpath) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("nothing installed (no {})", mpath.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", mpath.display())),
    };
    let m: Manifest =
        serde_json::from_slice(&data).with_context(|| format!("reading {}", mpath.display()))?;
    let live = match target {
        InstallTarget::Systemd => systemd_running(),
        InstallTarget::Launchd => launchd_running(),
    };
    run_all(&m.undo, live, dry_run)?;
    for f in &m.files {
        if dry_run {
            println!("would remove {}", f.display());
        } else if remove_installed(f)? {
            println!("removed {}", f.display());
        }
    }
    run_all(&m.after, live, dry_run)?;
    if !dry_run {
        std::fs::remove_file(&mpath).with_context(|| format!("removing {}", mpath.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

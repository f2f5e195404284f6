//! The runbook (`restore/README.md`) is walked by its own commands: every block marked
//! `sh tested` runs as written against a real backup, with steward and with plain tools.

use std::fs;
use std::path::Path;

use crate::common::{Env, STEWARD};

/// The `sh tested` blocks of the runbook, in order.
fn tested_blocks() -> Vec<String> {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("restore/README.md"))
        .unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh tested") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A backed-up SQLite database, then damaged; returns (env, live path, backup id).
fn damaged_host() -> (Env, std::path::PathBuf, String) {
    let env = Env::new();
    let dir = env.root.join("srv/app");
    fs::create_dir_all(&dir).unwrap();
    let live = dir.join("app.db");
    let db = rusqlite::Connection::open(&live).unwrap();
    db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v); INSERT INTO t VALUES ('good');")
        .unwrap();
    drop(db);
    env.one_set("database", &[&live], "");
    env.cmd().arg("backup").assert().success();
    let id = env.archives("database")[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.zst")
        .to_string();
    fs::write(&live, "damaged beyond repair").unwrap();
    (env, live, id)
}

/// Runs the runbook's `index`-th tested block for `set` / `id` (used by the host tests).
pub fn run_runbook_block(env: &Env, index: usize, set: &str, id: &str, live: &Path) {
    run_block_for(env, &tested_blocks()[index], set, live, id);
}

fn run_block(env: &Env, block: &str, live: &Path, id: &str) {
    run_block_for(env, block, "database", live, id);
}

fn run_block_for(env: &Env, block: &str, set: &str, live: &Path, id: &str) {
    let bin = Path::new(STEWARD).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .env_clear()
        .env("PATH", path)
        .env("HOME", &env.home)
        .env("STEWARD_CONFIG", &env.config)
        .env("DEST", &env.dest)
        .env("SET", set)
        .env("ID", id)
        .env("LIVE", live)
        .env("STAGING", env.root.join("staging"))
        .current_dir(&env.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runbook block failed:\n{block}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_good(live: &Path) {
    let db = rusqlite::Connection::open(live).unwrap();
    let v: String = db.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, "good");
}

#[test]
fn the_runbook_restores_with_steward() {
    let blocks = tested_blocks();
    assert_eq!(blocks.len(), 3, "expected three tested blocks");
    let (env, live, id) = damaged_host();
    run_block(&env, &blocks[0], &live, &id);
    assert_good(&live);
}

#[test]
fn the_runbook_restores_with_plain_tools_only() {
    let blocks = tested_blocks();
    let (env, live, id) = damaged_host();
    // Steward and its catalog are gone.
    fs::remove_dir_all(&env.state).unwrap();
    run_block(&env, &format!("{}\n{}", blocks[1], blocks[2]), &live, &id);
    assert_good(&live);
}

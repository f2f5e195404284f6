//! Configuration errors: exit 78 with file:line and the key; the example configs parse.

use std::fs;

use crate::common::{Env, stderr};

/// Writes `text` as the config and expects exit 78 naming `file:line` and `needle`.
fn expect_invalid(env: &Env, text: &str, line: usize, needle: &str) {
    fs::write(&env.config, text).unwrap();
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    let err = stderr(&a);
    let at = format!("{}:{line}:", env.config.display());
    assert!(err.contains(&at), "expected {at} in: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // Every command refuses the invalid config the same way.
    env.cmd().arg("backup").assert().code(78);
}

#[test]
fn invalid_configs_exit_78_naming_file_line_and_key() {
    let env = Env::new();
    expect_invalid(
        &env,
        "[backup]\ndestination = \"/b\"\ncolour = \"blue\"\n",
        3,
        "colour",
    );
    expect_invalid(
        &env,
        "[backup]\ncompression-level = \"high\"\n",
        2,
        "backup.compression-level",
    );
    expect_invalid(
        &env,
        "[backup]\ndestination = \"/b\"\n\n[[backup.set]]\nname = \"s\"\npaths = [\"/tmp\"]\nmax-age = \"a while\"\n",
        7,
        "invalid duration",
    );
    expect_invalid(
        &env,
        "[backup]\nmin-free-space = \"plenty\"\n",
        2,
        "invalid size",
    );
    expect_invalid(&env, "[backup\n", 1, "");
    expect_invalid(
        &env,
        "[backup]\ncompression-level = 40\n",
        2,
        "out of range",
    );
    expect_invalid(
        &env,
        "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"bad name!\"\npaths = [\"/tmp\"]\n",
        4,
        "not a valid set name",
    );
    expect_invalid(
        &env,
        "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"s\"\npaths = [\"relative/dir\"]\n",
        5,
        "not an absolute path",
    );
}

/// Regression (issue 24): one missing set path (an unmounted volume) made every backup
/// exit 78, so no other set was backed up. Now it fails its own set, naming the path and
/// its line, the other sets run, and `config check` warns.
#[test]
fn a_missing_set_path_fails_its_set_alone_naming_its_line() {
    let env = Env::new();
    let text = format!(
        "[state]\ndir = \"{}\"\n[backup]\ndestination = \"{}\"\n\n[[backup.set]]\nname = \"s\"\npaths = [\n  \"{}\",\n  \"{}/nope\",\n]\n\n[[backup.set]]\nname = \"t\"\npaths = [\"{}\"]\n",
        env.state.display(),
        env.dest.display(),
        env.home.display(),
        env.root.display(),
        env.home.display()
    );
    fs::write(&env.config, text).unwrap();
    let a = env.cmd().arg("backup").assert().code(2);
    let err = stderr(&a);
    assert!(
        err.contains(&format!("{}:10:", env.config.display()))
            && err.contains("nope")
            && err.contains("not mounted"),
        "{err}"
    );
    // The other set was backed up; nothing was half-written for the missing one.
    assert_eq!(env.archives("t").len(), 1);
    assert!(!env.dest.join("s").exists());
    let a = env.cmd().args(["config", "check"]).assert().success();
    let err = stderr(&a);
    assert!(
        err.contains("warning") && err.contains(&format!("{}:10:", env.config.display())),
        "{err}"
    );
}

#[test]
fn unreadable_config_file_is_named() {
    let env = Env::new();
    let a = env
        .bare_cmd()
        .args(["--config", "/nonexistent/steward.toml", "config", "check"])
        .assert()
        .code(78);
    assert!(
        stderr(&a).contains("/nonexistent/steward.toml"),
        "{}",
        stderr(&a)
    );
}

#[test]
fn every_example_in_schedules_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = fs::read_to_string(&p).unwrap();
            let cfg = steward::config::parse(&text, steward::config::Origin::File(p.clone()))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(
                !cfg.backup.sets.is_empty(),
                "{} has no backup sets",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 4, "expected the four reference hosts, found {n}");
    // The example packaging/install.sh puts in /etc/steward parses too.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/steward.example.toml");
    let text = fs::read_to_string(&p).unwrap();
    let cfg = steward::config::parse(&text, steward::config::Origin::File(p)).unwrap();
    assert_eq!(cfg.schedule.jobs.len(), 5);
}

/// Regression: a table header with a trailing comment garbled the key in errors
/// (`backup]   # a comment.compression-level`).
#[test]
fn regression_a_comment_after_a_table_header_keeps_the_key_readable() {
    let env = Env::new();
    expect_invalid(
        &env,
        "[backup]   # a comment\ncompression-level = \"high\"\n",
        2,
        "backup.compression-level: ",
    );
    let err = {
        let a = env.cmd().args(["config", "check"]).assert().code(78);
        stderr(&a)
    };
    assert!(!err.contains("# a comment"), "{err}");
}

/// Regression: a config file that is not UTF-8 was reported without a line.
#[test]
fn regression_a_config_that_is_not_utf8_is_located() {
    let env = Env::new();
    fs::write(&env.config, b"[backup]\ndestination = \"/b\xe9\"\n").unwrap();
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    let err = stderr(&a);
    assert!(
        err.contains(&format!("{}:2:", env.config.display())) && err.contains("UTF-8"),
        "{err}"
    );
}

/// Regression: `state.dir = "/"` or a file, and sizes past the largest one, were accepted
/// (the size silently capped).
#[test]
fn regression_nonsense_state_dirs_and_oversized_sizes_are_refused() {
    let env = Env::new();
    expect_invalid(&env, "[state]\ndir = \"/\"\n", 2, "state.dir");
    expect_invalid(&env, "[state]\ndir = \"/dev/null\"\n", 2, "not a folder");
    expect_invalid(
        &env,
        "[backup]\ndestination = \"/b\"\nmin-free-space = \"100000000 EiB\"\n",
        3,
        "larger than the largest",
    );
}

//! Documentation that runs: every ```toml block in README.md, packaging/ and restore/, the
//! example configs, and the configuration `config check` prints, which must read back as
//! the same configuration.

use std::path::{Path, PathBuf};

use steward::config::{Origin, parse};

/// The ```toml blocks of a Markdown file, with the line each starts on.
fn toml_blocks(md: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(md).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => {
                current = Some((i + 1, String::new()));
            }
            Some(_) if line.trim_start().starts_with("```") => out.push(current.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Parses `text`, then what `config check` would print for it, and compares the two.
fn parses_and_round_trips(text: &str, what: &str) {
    let origin = Origin::File(PathBuf::from(what));
    let cfg = parse(text, origin.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let again = parse(&cfg.effective, origin).unwrap_or_else(|e| {
        panic!(
            "{what}: the printed config does not parse: {e}\n{}",
            cfg.effective
        )
    });
    assert_eq!(
        serde_json::to_value(&cfg).unwrap(),
        serde_json::to_value(&again).unwrap(),
        "{what}: the printed config reads back differently:\n{}",
        cfg.effective
    );
    assert_eq!(
        cfg.effective, again.effective,
        "{what}: printing is not stable"
    );
}

#[test]
fn every_toml_block_in_the_docs_parses_and_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for dir in ["packaging", "restore", "docs"] {
        for e in walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_map(Result::ok)
        {
            if e.path().extension().is_some_and(|x| x == "md") {
                docs.push(e.path().to_path_buf());
            }
        }
    }
    let mut seen = 0;
    for md in &docs {
        for (line, block) in toml_blocks(md) {
            parses_and_round_trips(&block, &format!("{}:{line}", md.display()));
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} toml blocks found");
    let mut files = vec![root.join("packaging/steward.example.toml")];
    for e in std::fs::read_dir(root.join("schedules")).unwrap() {
        files.push(e.unwrap().path());
    }
    files.push(root.join("src/default.toml"));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        parses_and_round_trips(&text, &f.display().to_string());
    }
}

/// Regression: `config check` printed an "effective config" (`[[backup.sets]]`,
/// `state-dir`, `vacuum_margin`) that was not a valid config.
#[test]
fn regression_config_check_prints_a_config_that_config_check_accepts() {
    let env = crate::common::Env::new();
    let data = env.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    env.one_set(
        "s",
        &[&data],
        "exclude = [\"*.tmp\"]\n[backup.set.keep]\nlast = 3\n",
    );
    let a = env.cmd().args(["config", "check"]).assert().success();
    let printed = env.root.join("printed.toml");
    std::fs::write(&printed, crate::common::stdout(&a)).unwrap();
    let b = env
        .bare_cmd()
        .args(["--config"])
        .arg(&printed)
        .args(["config", "check", "--json"])
        .assert()
        .success();
    let c = env
        .cmd()
        .args(["config", "check", "--json"])
        .assert()
        .success();
    let strip = |s: String| {
        let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v.as_object_mut().unwrap().remove("origin");
        v
    };
    assert_eq!(
        strip(crate::common::stdout(&b)),
        strip(crate::common::stdout(&c))
    );
}

/// Regression: the README's first Quick-tour command only worked on the host its example
/// config describes.
#[test]
fn regression_the_quick_tours_first_command_runs_anywhere() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let tour = readme.split("## Quick tour").nth(1).unwrap();
    let first = tour
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .nth(1)
        .unwrap();
    let command = first.split('#').next().unwrap().trim();
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[0], "steward", "{first}");
    let env = crate::common::Env::new();
    env.bare_cmd().args(&args[1..]).assert().success();
}

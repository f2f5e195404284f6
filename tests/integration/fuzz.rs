//! Property tests over the config loader and the cron parser, bounded so CI runs them on
//! every build: arbitrary bytes and structured mutations of the example configs never
//! panic, and every refusal is located `file:line:column`; arbitrary schedules never
//! panic, and a schedule that parses computes its next and previous fires.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use steward::config::{Origin, parse};

fn examples() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<String> = std::fs::read_dir(root.join("schedules"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    v.push(std::fs::read_to_string(root.join("packaging/steward.example.toml")).unwrap());
    v.sort();
    v
}

const ORIGIN: &str = "/x/fuzz.toml";

/// Parses `text`: no panic, and an error names `file:line:column`.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let result = std::panic::catch_unwind(|| parse(text, Origin::File(PathBuf::from(ORIGIN))));
    let parsed = result.map_err(|_| TestCaseError::fail(format!("panicked on {text:?}")))?;
    if let Err(e) = parsed {
        let msg = e.to_string();
        let rest = msg
            .strip_prefix(&format!("{ORIGIN}:"))
            .ok_or_else(|| TestCaseError::fail(format!("not located: {msg}")))?;
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|l| l.parse::<usize>().ok());
        let col = parts.next().and_then(|c| c.parse::<usize>().ok());
        prop_assert!(line.is_some() && col.is_some(), "not line:column: {msg}");
    }
    Ok(())
}

/// One structured change to a config's text.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    CutAt(usize),
    InsertLine(usize, String),
    ReplaceValue(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("1e309".to_string()),
        Just("\"59/69 * * * *\"".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{ x = 1 }".to_string()),
        Just("\"999999999 EiB\"".to_string()),
        Just("\"-5s\"".to_string()),
        Just("\"/\"".to_string()),
        Just("true".to_string()),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    let line = prop_oneof![
        Just("[[backup.set]]".to_string()),
        Just("[backup.keep]".to_string()),
        Just("[checks.cpu]".to_string()),
        Just("[[service]]".to_string()),
        Just("[schedule]".to_string()),
        Just("x = 1".to_string()),
        Just("name = \"a\"".to_string()),
        "\\PC{0,30}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::CutAt),
        (any::<usize>(), line).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        (any::<usize>(), value).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::CutAt(i) => {
            let mut cut = i % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_string();
        }
        Mutation::InsertLine(i, l) => lines.insert(i % (n + 1), l.clone()),
        Mutation::ReplaceValue(i, v) => {
            let k = i % n;
            if let Some((key, _)) = lines[k].split_once('=') {
                lines[k] = format!("{key}= {v}");
            }
        }
    }
    lines.join("\n") + "\n"
}

/// One cron field made of the forms cron allows, with numbers past every field's range
/// and steps up to the largest an i8 holds.
fn cron_field() -> impl Strategy<Value = String> {
    let n = 0u8..100;
    let step = 1u8..=127;
    let part = prop_oneof![
        Just("*".to_string()),
        n.clone().prop_map(|a| a.to_string()),
        (n.clone(), n.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        step.clone().prop_map(|s| format!("*/{s}")),
        (n.clone(), step.clone()).prop_map(|(a, s)| format!("{a}/{s}")),
        (n.clone(), n, step).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
    ];
    proptest::collection::vec(part, 1..3).prop_map(|p| p.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_config_loader(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        check_config(&text)?;
    }

    #[test]
    fn mutated_example_configs_never_panic_and_errors_are_located(
        which in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let all = examples();
        let mut text = all[which % all.len()].clone();
        for m in &ms {
            text = apply(&text, m);
        }
        check_config(&text)?;
    }

    #[test]
    fn arbitrary_schedules_never_panic(
        expr in prop_oneof![
            "\\PC{0,40}",
            "([0-9*/,-]{1,8} ){4}[0-9*/,-]{1,8}",
            proptest::collection::vec(cron_field(), 5..=6).prop_map(|f| f.join(" ")),
        ],
        at in 0i64..4_102_444_800,
        tz in prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("America/New_York")],
    ) {
        let result = std::panic::catch_unwind(|| {
            if let Ok(c) = steward::schedule::parse(&expr) {
                let tz = jiff::tz::TimeZone::get(tz).unwrap();
                let t = jiff::Timestamp::from_second(at).unwrap();
                if let Some(next) = c.next_after(t, &tz) {
                    assert!(next > t);
                }
                if let Some(prev) = c.prev_at_or_before(t, &tz) {
                    assert!(prev <= t);
                }
            }
        });
        prop_assert!(result.is_ok(), "panicked on {expr:?} at {at} in {tz}");
    }
}

//! The shape of the code, checked: the module graph read from `src/` (every `crate::` and
//! `super::` path) has no circle, nothing below the command layer points up into
//! `commands/`, `cli.rs` or `lib.rs`, no command file calls another, and no function in
//! `backup/`, `restore/` or `jobs/` is over 150 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module: its path under `src/` without `.rs`, `mod.rs` naming its folder (the crate
/// root is empty).
type Module = Vec<String>;

fn modules() -> BTreeMap<Module, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for e in walkdir(&src) {
        let rel = e.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&e).unwrap();
        out.insert(parts, code_of(&text));
    }
    out
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walkdir(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            v.push(p);
        }
    }
    v
}

/// The text without its unit tests, comments and string literals (so that a path in a
/// message or a doc comment is not taken for a use).
fn code_of(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('{', '\n'); lifetimes have no closing quote.
            let end = text[i + 1..].find('\'').map_or(b.len(), |k| i + 2 + k);
            i = end;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Every path a use tree starting at `i` names (`a::{b, c::d}` gives `a::b`, `a::c::d`).
fn use_tree(s: &[u8], i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut i = skip_ws(s, i);
    let mut path = prefix.to_vec();
    loop {
        if i < s.len() && s[i] == b'{' {
            i += 1;
            loop {
                i = skip_ws(s, i);
                if i < s.len() && s[i] == b'}' {
                    return i + 1;
                }
                i = use_tree(s, i, &path, out);
                i = skip_ws(s, i);
                if i < s.len() && s[i] == b',' {
                    i += 1;
                }
            }
        }
        let (id, j) = ident_at(s, i);
        if id.is_empty() {
            out.push(path);
            return i;
        }
        if id != "self" {
            path.push(id);
        }
        i = j;
        if s[i..].starts_with(b"::") {
            i += 2;
        } else {
            // ` as x` or the end of this branch.
            while i < s.len() && !matches!(s[i], b',' | b'}' | b';') {
                i += 1;
            }
            out.push(path);
            return i;
        }
    }
}

/// The paths `code` names through `crate::` or `super::` (a `super::` path made absolute
/// from `module`).
fn paths(module: &Module, code: &str) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let at_word =
            i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        let root = if at_word && s[i..].starts_with(b"crate::") {
            Some((Vec::new(), i + 7))
        } else if at_word && s[i..].starts_with(b"super::") {
            // `super` of `a/b.rs` is `a`, and of `a/mod.rs` the parent of `a`: the module
            // path less its last name either way.
            let mut base = module.clone();
            base.pop();
            let mut j = i + 7;
            while s[j..].starts_with(b"super::") {
                base.pop();
                j += 7;
            }
            Some((base, j))
        } else {
            None
        };
        match root {
            Some((base, j)) => {
                let mut found = Vec::new();
                i = use_tree(s, j, &base, &mut found);
                out.extend(found);
            }
            None => i += 1,
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(mods: &BTreeMap<Module, String>, path: &[String]) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
        .unwrap_or_default()
}

/// Module -> the modules it uses, with the names used at the crate root.
fn graph() -> (
    BTreeMap<Module, BTreeSet<Module>>,
    BTreeMap<Module, BTreeSet<String>>,
) {
    let mods = modules();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut at_root: BTreeMap<Module, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        let e = edges.entry(m.clone()).or_default();
        for p in paths(m, code) {
            let r = resolve(&mods, &p);
            if r.is_empty()
                && !m.is_empty()
                && let Some(name) = p.first()
            {
                at_root.entry(m.clone()).or_default().insert(name.clone());
            }
            if r != *m {
                e.insert(r);
            }
        }
    }
    (edges, at_root)
}

/// `a` inside `b` or `b` inside `a`: a folder and what it holds are one unit.
fn nested(a: &Module, b: &Module) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "lib.rs".into()
    } else {
        m.join("/")
    }
}

/// The circles of `g` (strongly connected parts with more than one module).
fn circles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative enough for a few hundred modules.
    struct T<'g> {
        g: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T<'_>, v: &Module) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let next: Vec<Module> = t.g.get(v).into_iter().flatten().cloned().collect();
        for w in next {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let l = t.low[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            } else if t.on.contains(&w) {
                let l = t.index[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut part = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                let done = w == *v;
                part.push(show(&w));
                if done {
                    break;
                }
            }
            if part.len() > 1 {
                part.sort();
                t.out.push(part);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_circle_at_any_level() {
    let (edges, _) = graph();
    // Between files: a folder's mod.rs and its children are one unit, the rest is not.
    let files: BTreeMap<Module, BTreeSet<Module>> = edges
        .iter()
        .map(|(m, to)| {
            let to = to
                .iter()
                .filter(|d| !d.is_empty() && !nested(m, d))
                .cloned()
                .collect();
            (m.clone(), to)
        })
        .collect();
    assert_eq!(
        circles(&files),
        Vec::<Vec<String>>::new(),
        "circles between files"
    );
    // Between the top-level modules (folders and files under src/).
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, to) in &edges {
        let Some(a) = m.first() else { continue };
        let e = top.entry(vec![a.clone()]).or_default();
        for d in to {
            if let Some(b) = d.first()
                && b != a
            {
                e.insert(vec![b.clone()]);
            }
        }
    }
    assert_eq!(
        circles(&top),
        Vec::<Vec<String>>::new(),
        "circles between top-level modules"
    );
}

#[test]
fn nothing_below_the_command_layer_points_up() {
    let (edges, at_root) = graph();
    let front = |m: &Module| m.is_empty() || m[0] == "commands" || m[0] == "cli" || m[0] == "main";
    let mut up = Vec::new();
    for (m, to) in &edges {
        if front(m) {
            continue;
        }
        for d in to.iter().filter(|d| !d.is_empty() && front(d)) {
            up.push(format!("{} -> {}", show(m), show(d)));
        }
    }
    // Names used from the crate root that are no module: lib.rs's own items.
    for (m, names) in &at_root {
        if m.as_slice() == ["main"] {
            continue;
        }
        for n in names {
            up.push(format!("{} -> lib.rs::{n}", show(m)));
        }
    }
    assert_eq!(up, Vec::<String>::new());
}

#[test]
fn no_command_file_calls_another() {
    let (edges, _) = graph();
    // What every command shares: the dispatcher's helpers, the report printer, the
    // progress display.
    let shared = ["show", "progress"];
    let mut calls = Vec::new();
    for (m, to) in &edges {
        if m.len() != 2 || m[0] != "commands" {
            continue;
        }
        for d in to {
            if d.len() == 2 && d[0] == "commands" && !shared.contains(&d[1].as_str()) {
                calls.push(format!("{} -> {}", show(m), show(d)));
            }
        }
    }
    assert_eq!(calls, Vec::<String>::new());
}

#[test]
fn no_function_in_the_job_core_is_over_150_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for dir in ["backup", "restore", "jobs"] {
        for f in walkdir(&src.join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let t = l.trim_start();
                let indent = &l[..l.len() - t.len()];
                let head = t
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ")
                    .trim_start_matches("async ");
                if !head.starts_with("fn ") {
                    continue;
                }
                let close = format!("{indent}}}");
                let Some(end) = lines[i..].iter().position(|x| *x == close) else {
                    continue;
                };
                if end + 1 > 150 {
                    let name = head[3..].split(['(', '<']).next().unwrap_or("");
                    long.push(format!(
                        "{}:{} {name}: {} lines",
                        f.strip_prefix(&src).unwrap().display(),
                        i + 1,
                        end + 1
                    ));
                }
            }
        }
    }
    assert_eq!(long, Vec::<String>::new());
}

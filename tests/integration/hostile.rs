//! A corpus of hostile archives, each a valid steward archive (sidecar, manifest, trailer
//! and identity all correct, so only the restore's own rules stand in the way), restored
//! in place and with `--to`, with and without `--allow-external-symlinks`, and again with
//! the up-front safety pass switched off (debug builds), so that confinement by
//! construction is shown to hold on its own. No byte outside the target may change.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::common::{Env, stderr, stdout};

/// Appends one raw tar entry, with the name written straight into the header so that no
/// library sanitizes it.
fn raw_entry(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: EntryType,
    link: Option<&[u8]>,
    mode: u32,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The raw tar entries of a set `prefix/` holding one good file.
fn standard(prefix: &str) -> Vec<u8> {
    let mut d = Vec::new();
    raw_entry(
        &mut d,
        prefix.as_bytes(),
        EntryType::Directory,
        None,
        0o755,
        b"",
    );
    raw_entry(
        &mut d,
        format!("{prefix}/good.txt").as_bytes(),
        EntryType::Regular,
        None,
        0o644,
        b"good\n",
    );
    d
}

/// The Unix time of an ID's stamp (`s-YYYYMMDDT000000Z`, days of 2026-01 and 2026-02).
fn id_time(id: &str) -> i64 {
    let stamp = id.rsplit('-').next().unwrap();
    let month: i64 = stamp[4..6].parse().unwrap();
    let day: i64 = stamp[6..8].parse().unwrap();
    1_767_225_600 + ((month - 1) * 31 + day - 1) * 86_400
}

/// Writes `<dest>/<set>/<id>.tar.zst` (+ sidecar) holding `data` (raw tar entries) with a
/// manifest listing every regular file, and a `backup.json` recording `paths`.
fn write_archive(env: &Env, id: &str, paths: &[String], data: &[u8]) -> PathBuf {
    let mut manifest = String::new();
    let mut files = 0;
    let mut pos = 0;
    while pos < data.len() {
        let h = tar::Header::from_byte_slice(&data[pos..pos + 512]);
        let size = h.entry_size().unwrap() as usize;
        if h.entry_type() == EntryType::Regular {
            let body = &data[pos + 512..pos + 512 + size];
            let name = String::from_utf8_lossy(&h.as_gnu().unwrap().name)
                .trim_end_matches('\0')
                .to_string();
            manifest.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(body))));
            files += 1;
        }
        pos += 512 + size.div_ceil(512) * 512;
    }
    let set = id.rsplit_once('-').unwrap().0;
    let created = id_time(id);
    let meta = serde_json::json!({
        "format": 1, "id": id, "set": set, "host": "evil", "created": "2026-01-01T00:00:00Z",
        "created_unix": created, "tool": "hand-made", "paths": paths,
        "exclude": [], "files": files, "dirs": 1, "symlinks": 0, "hardlinks": 0, "skipped": 0,
        "bytes": 5, "sqlite": [], "fingerprint": "x", "compression_level": 3,
        "warnings": [], "warnings_total": 0
    });
    let mut trailer = Vec::new();
    raw_entry(
        &mut trailer,
        b".steward/MANIFEST.sha256",
        EntryType::Regular,
        None,
        0o600,
        manifest.as_bytes(),
    );
    let json = serde_json::to_vec(&meta).unwrap();
    raw_entry(
        &mut trailer,
        b".steward/backup.json",
        EntryType::Regular,
        None,
        0o600,
        &json,
    );
    trailer.extend_from_slice(&[0u8; 1024]);
    let mut file = zstd::encode_all(data, 3).unwrap();
    let offset = file.len() as u64;
    file.extend(zstd::encode_all(&trailer[..], 3).unwrap());
    file.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    file.extend_from_slice(&16u32.to_le_bytes());
    file.extend_from_slice(b"STEWARD1");
    file.extend_from_slice(&offset.to_le_bytes());
    let dir = env.dest.join(set);
    fs::create_dir_all(&dir).unwrap();
    let name = format!("{id}.tar.zst");
    fs::write(dir.join(&name), &file).unwrap();
    fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{}  {name}\n", hex::encode(Sha256::digest(&file))),
    )
    .unwrap();
    dir.join(name)
}

/// Every entry under `dir` with its kind, mode and content (or link target), sorted;
/// `skip` names are left out at any depth.
fn tree(dir: &Path, skip: &[&Path]) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| !skip.contains(&e.path()))
        .filter_map(Result::ok)
        .map(|e| {
            let m = fs::symlink_metadata(e.path()).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                hex::encode(Sha256::digest(fs::read(e.path()).unwrap()))
            } else {
                "dir".into()
            };
            use std::os::unix::fs::PermissionsExt;
            format!("{} {:o} {what}", e.path().display(), m.permissions().mode())
        })
        .collect();
    v.sort();
    v
}

/// Builds a case's raw tar entries from the set's archive prefix and the test root's.
type Entries = Box<dyn Fn(&str, &str) -> Vec<u8>>;

/// The reason a refusal must give (by `--to`, `--allow-external-symlinks`); `None`: allowed.
type Reason = Box<dyn Fn(bool, bool) -> Option<&'static str>>;

/// One hostile archive: its entries (given the set's archive prefix and the test root's),
/// the paths its backup.json records, and what must be said when it is refused.
struct Case {
    name: &'static str,
    entries: Entries,
    /// Extra recorded paths (relative to the root, without the leading `/`).
    widen: bool,
    /// The reason a refusal gives, and the entry it names; `None`: allowed in that mode.
    reason: Reason,
    entry: fn(&str, &str) -> String,
}

fn one(
    prefix: &str,
    name: &str,
    kind: EntryType,
    link: Option<&str>,
    mode: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut d = standard(prefix);
    raw_entry(
        &mut d,
        name.as_bytes(),
        kind,
        link.map(str::as_bytes),
        mode,
        data,
    );
    d
}

/// The chain `link -> d1/d2/up/../..` with `d1/d2/up -> ../..`: textually inside the set
/// (`d1`), really two folders above it (beside the staging folder: the set's parent).
fn chain(prefix: &str) -> Vec<u8> {
    let mut d = standard(prefix);
    let p = prefix;
    for dir in ["d1", "d1/d2"] {
        raw_entry(
            &mut d,
            format!("{p}/{dir}").as_bytes(),
            EntryType::Directory,
            None,
            0o755,
            b"",
        );
    }
    raw_entry(
        &mut d,
        format!("{p}/d1/d2/up").as_bytes(),
        EntryType::Symlink,
        Some(b"../.."),
        0o777,
        b"",
    );
    raw_entry(
        &mut d,
        format!("{p}/link").as_bytes(),
        EntryType::Symlink,
        Some(b"d1/d2/up/../.."),
        0o777,
        b"",
    );
    d
}

/// The symlink chain, then one entry `name` (a file, or a hard link to `link`).
fn after_chain(p: &str, name: String, link: Option<String>) -> Vec<u8> {
    let mut d = chain(p);
    let kind = if link.is_some() {
        EntryType::Link
    } else {
        EntryType::Regular
    };
    let data: &[u8] = if link.is_some() { b"" } else { b"pwned" };
    raw_entry(
        &mut d,
        name.as_bytes(),
        kind,
        link.as_deref().map(str::as_bytes),
        0o644,
        data,
    );
    d
}

/// A case of one extra entry (named by `entry`) beside the standard set, always refused
/// for `reason`.
fn simple(
    name: &'static str,
    entry: fn(&str, &str) -> String,
    kind: EntryType,
    link: Option<&'static str>,
    mode: u32,
    reason: &'static str,
) -> Case {
    Case {
        name,
        entries: Box::new(move |p, r| one(p, &entry(p, r), kind, link, mode, b"x")),
        widen: false,
        reason: Box::new(move |_, _| Some(reason)),
        entry,
    }
}

fn cases() -> Vec<Case> {
    use EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let mut v = vec![
        simple(
            "dotdot",
            |p, _| format!("{p}/../victim.txt"),
            Regular,
            None,
            0o644,
            "`..` component",
        ),
        simple(
            "absolute",
            |_, r| format!("/{r}/victim.txt"),
            Regular,
            None,
            0o644,
            "absolute path",
        ),
        simple(
            "outside",
            |_, r| format!("{r}/victim.txt"),
            Regular,
            None,
            0o644,
            "outside the backed-up paths",
        ),
        simple(
            "symlink-rel",
            |p, _| format!("{p}/up"),
            Symlink,
            Some("../../../../../../etc"),
            0o777,
            "points outside",
        ),
        simple(
            "hardlink-out",
            |p, _| format!("{p}/h"),
            Link,
            Some("etc/passwd"),
            0o644,
            "hard link",
        ),
        simple(
            "device",
            |p, _| format!("{p}/null"),
            Char,
            None,
            0o666,
            "device node",
        ),
        simple(
            "block",
            |p, _| format!("{p}/sda"),
            Block,
            None,
            0o660,
            "device node",
        ),
        simple(
            "fifo",
            |p, _| format!("{p}/pipe"),
            Fifo,
            None,
            0o644,
            "FIFO",
        ),
        simple(
            "setuid",
            |p, _| format!("{p}/su"),
            Regular,
            None,
            0o4755,
            "setuid/setgid",
        ),
        simple(
            "setgid",
            |p, _| format!("{p}/sg"),
            Directory,
            None,
            0o2775,
            "setuid/setgid",
        ),
    ];
    v.extend([
        Case {
            name: "symlink-abs",
            entries: Box::new(|p, _| {
                one(
                    p,
                    &format!("{p}/etc"),
                    EntryType::Symlink,
                    Some("/etc"),
                    0o777,
                    b"",
                )
            }),
            widen: false,
            reason: Box::new(|_, allow| (!allow).then_some("symlink to /etc")),
            entry: |p, _| format!("{p}/etc"),
        },
        Case {
            name: "symlink-chain-write",
            entries: Box::new(|p, _| after_chain(p, format!("{p}/link/victim.txt"), None)),
            widen: false,
            reason: Box::new(|_, _| Some("is a symlink")),
            entry: |p, _| format!("{p}/link/victim.txt"),
        },
        Case {
            name: "symlink-chain-hardlink-name",
            entries: Box::new(|p, _| {
                after_chain(
                    p,
                    format!("{p}/link/victim.txt"),
                    Some(format!("{p}/good.txt")),
                )
            }),
            widen: false,
            reason: Box::new(|_, _| Some("is a symlink")),
            entry: |p, _| format!("{p}/link/victim.txt"),
        },
        Case {
            name: "symlink-chain-hardlink-target",
            entries: Box::new(|p, _| {
                after_chain(p, format!("{p}/h"), Some(format!("{p}/link/victim.txt")))
            }),
            widen: false,
            reason: Box::new(|_, _| Some("hard link")),
            entry: |p, _| format!("{p}/h"),
        },
        Case {
            name: "set-root-symlink",
            entries: Box::new(|p, r| {
                let mut d = Vec::new();
                raw_entry(
                    &mut d,
                    p.as_bytes(),
                    EntryType::Symlink,
                    Some(format!("/{r}/outside").as_bytes()),
                    0o777,
                    b"",
                );
                raw_entry(
                    &mut d,
                    format!("{p}/victim.txt").as_bytes(),
                    EntryType::Regular,
                    None,
                    0o644,
                    b"pwned",
                );
                d
            }),
            widen: false,
            reason: Box::new(|_, _| Some("set path itself is a symlink")),
            entry: |p, _| p.to_string(),
        },
        Case {
            name: "external-symlink-written-through",
            entries: Box::new(|p, r| {
                let mut d = standard(p);
                raw_entry(
                    &mut d,
                    format!("{p}/ext").as_bytes(),
                    EntryType::Symlink,
                    Some(format!("/{r}/outside").as_bytes()),
                    0o777,
                    b"",
                );
                raw_entry(
                    &mut d,
                    format!("{p}/ext/victim.txt").as_bytes(),
                    EntryType::Regular,
                    None,
                    0o644,
                    b"pwned",
                );
                d
            }),
            widen: false,
            reason: Box::new(|_, allow| {
                Some(if allow {
                    "is a symlink"
                } else {
                    "points outside"
                })
            }),
            entry: |p, _| format!("{p}/ext"),
        },
        Case {
            name: "widened-paths",
            entries: Box::new(|p, r| {
                let mut d = standard(p);
                raw_entry(
                    &mut d,
                    format!("{r}/outside").as_bytes(),
                    EntryType::Directory,
                    None,
                    0o755,
                    b"",
                );
                raw_entry(
                    &mut d,
                    format!("{r}/outside/victim.txt").as_bytes(),
                    EntryType::Regular,
                    None,
                    0o644,
                    b"pwned",
                );
                d
            }),
            widen: true,
            reason: Box::new(|to, _| (!to).then_some("configured with")),
            entry: |_, r| format!("/{r}/outside"),
        },
    ]);
    v
}

/// One cell of the matrix, in a world of its own: the set `app` (with live data), a
/// sibling folder `outside` with a victim file; a new `victim.txt` beside the set would be
/// an escape too.
fn run_cell(case: &Case, to: bool, allow: bool, skip_pass: bool) {
    let env = Env::new();
    let target = env.root.join("app");
    let outside = env.root.join("outside");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(target.join("live.txt"), "live data\n").unwrap();
    fs::write(outside.join("victim.txt"), "original\n").unwrap();
    env.one_set("s", &[&target], "");
    let root_rel = env
        .root
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let prefix = format!("{root_rel}/app");
    let mut paths = vec![format!("/{prefix}")];
    if case.widen {
        paths.push(format!("/{root_rel}/outside"));
    }
    let id = "s-20260105T000000Z";
    write_archive(&env, id, &paths, &(case.entries)(&prefix, &root_rel));
    env.cmd().args(["backups", "reindex"]).assert().success();
    let to_dir = env.root.join("to");
    let skip: Vec<&Path> = vec![&target, &env.dest, &env.state, &to_dir];
    let before = tree(&env.root, &skip);
    let live_before = tree(&target, &[]);
    let mut cmd = env.cmd();
    cmd.args(["restore", id, "--yes"]);
    if to {
        cmd.arg("--to").arg(&to_dir);
    }
    if allow {
        cmd.arg("--allow-external-symlinks");
    }
    if skip_pass {
        cmd.env("STEWARD_TEST_RESTORE_SKIP_SAFETY_PASS", "1");
    }
    let out = cmd.output().unwrap();
    let cell = format!(
        "{} (to={to}, allow={allow}, skip-pass={skip_pass})",
        case.name
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // Never a byte outside the target: not beside it, not in the sibling, not the victims.
    let rollback = |e: &String| e.contains("steward-rollback-");
    let after: Vec<String> = tree(&env.root, &skip)
        .into_iter()
        .filter(|e| !rollback(e))
        .collect();
    assert_eq!(
        after, before,
        "{cell} changed something outside the target: {err}"
    );
    let leftovers: Vec<String> = tree(&env.root, &[&env.dest, &env.state])
        .into_iter()
        .filter(|e| e.contains("steward-staging"))
        .collect();
    assert!(leftovers.is_empty(), "{cell} left {leftovers:?}");
    // Nothing restored is ever setuid or setgid.
    for dir in [&target, &to_dir] {
        for e in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::symlink_metadata(e.path()).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o6000,
                0,
                "{cell}: {} is setuid/setgid",
                e.path().display()
            );
        }
    }
    if skip_pass {
        // Without the early pass the refusal may come later or the entry be left out, but
        // nothing above may have changed.
        return;
    }
    if let Some(reason) = (case.reason)(to, allow) {
        assert_eq!(out.status.code(), Some(2), "{cell}: {err}");
        let entry = (case.entry)(&prefix, &root_rel);
        assert!(err.contains(reason), "{cell}: {err}");
        assert!(err.contains(&entry), "{cell} does not name {entry}: {err}");
        assert_eq!(
            tree(&target, &[]),
            live_before,
            "{cell} wrote into live data"
        );
        assert!(
            !to_dir.join(&prefix).exists(),
            "{cell} created the --to target"
        );
    } else {
        assert_eq!(out.status.code(), Some(0), "{cell}: {err}");
        let got = if to {
            to_dir.join(&prefix)
        } else {
            target.clone()
        };
        assert_eq!(fs::read(got.join("good.txt")).unwrap(), b"good\n", "{cell}");
    }
}

/// Every case, in place and with `--to`, with and without `--allow-external-symlinks`.
fn matrix(skip_pass: bool) {
    for case in cases() {
        for to in [false, true] {
            for allow in [false, true] {
                run_cell(&case, to, allow, skip_pass);
            }
        }
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_outside_the_target_changes() {
    matrix(false);
}

#[test]
fn confinement_holds_without_the_up_front_safety_pass() {
    matrix(true);
}

#[test]
fn an_archive_passing_for_another_backup_is_not_imported_nor_restored() {
    let env = Env::new();
    let target = env.root.join("app");
    fs::create_dir_all(&target).unwrap();
    env.one_set("s", &[&target], "");
    let root_rel = env
        .root
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let prefix = format!("{root_rel}/app");
    let paths = vec![format!("/{prefix}")];
    let good = "s-20260105T000000Z";
    write_archive(&env, good, &paths, &standard(&prefix));
    env.cmd().args(["backups", "reindex"]).assert().success();
    // The attacker's archive, named like another backup but claiming the good one's ID.
    let mut evil = standard(&prefix);
    raw_entry(
        &mut evil,
        format!("{prefix}/evil.txt").as_bytes(),
        EntryType::Regular,
        None,
        0o644,
        b"evil",
    );
    let made = write_archive(&env, "s-20260106T000000Z", &paths, &evil);
    let forged = made.with_file_name("s-20260107T000000Z.tar.zst");
    // Same bytes, another name: backup.json inside still says s-20260106T000000Z.
    fs::rename(&made, &forged).unwrap();
    let sidecar = fs::read_to_string(format!("{}.sha256", made.display())).unwrap();
    fs::remove_file(format!("{}.sha256", made.display())).unwrap();
    fs::write(
        format!("{}.sha256", forged.display()),
        sidecar.replace("s-20260106T000000Z", "s-20260107T000000Z"),
    )
    .unwrap();
    let a = env.cmd().args(["backups", "reindex"]).assert().code(2);
    let out = stdout(&a);
    assert!(
        out.contains("s-20260107T000000Z.tar.zst") && out.contains("not imported"),
        "{out}"
    );
    let list = env.list_json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![good]);
    env.cmd()
        .args(["restore", good, "--yes"])
        .assert()
        .success();
    assert!(!target.join("evil.txt").exists());
    assert_eq!(fs::read(target.join("good.txt")).unwrap(), b"good\n");
    // The forged bytes copied over the good backup's own file (sidecar fixed too): verify
    // and restore name the mismatch; nothing is restored.
    let good_path = env.dest.join("s").join(format!("{good}.tar.zst"));
    fs::copy(&forged, &good_path).unwrap();
    fs::write(
        format!("{}.sha256", good_path.display()),
        sidecar.replace("s-20260106T000000Z", good),
    )
    .unwrap();
    let a = env.cmd().args(["verify", good]).assert().code(2);
    assert!(
        stdout(&a).contains("names the backup") || stderr(&a).contains("names the backup"),
        "{}{}",
        stdout(&a),
        stderr(&a)
    );
    fs::remove_file(target.join("good.txt")).unwrap();
    let a = env.cmd().args(["restore", good, "--yes"]).assert().code(2);
    assert!(stderr(&a).contains("names the backup"), "{}", stderr(&a));
    assert!(!target.join("evil.txt").exists() && !target.join("good.txt").exists());
}

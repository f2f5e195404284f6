//! A corpus of hostile archives, each a valid steward archive (sidecar, manifest and
//! trailer all correct) with one dangerous entry: every one is refused, naming the
//! reason, before any byte is written anywhere.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::common::{Env, stderr};

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

/// Writes `<dest>/s/<id>.tar.zst` (+ sidecar) holding `prefix/` with one good file and
/// the entries `evil` adds.
fn write_archive(env: &Env, id: &str, prefix: &str, evil: &dyn Fn(&mut Vec<u8>)) {
    let mut data = Vec::new();
    let mut manifest = String::new();
    raw_entry(
        &mut data,
        prefix.as_bytes(),
        EntryType::Directory,
        None,
        0o755,
        b"",
    );
    let good = format!("{prefix}/good.txt");
    raw_entry(
        &mut data,
        good.as_bytes(),
        EntryType::Regular,
        None,
        0o644,
        b"good\n",
    );
    manifest.push_str(&format!(
        "{}  {good}\n",
        hex::encode(Sha256::digest(b"good\n"))
    ));
    let before = data.len();
    evil(&mut data);
    // Regular files the corpus adds are listed too, so only the safety rules object.
    let mut files = 1;
    let mut pos = before;
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
    let meta = serde_json::json!({
        "format": 1, "id": id, "set": "s", "host": "evil", "created": "2026-01-01T00:00:00Z",
        "created_unix": 1_767_225_600i64, "tool": "hand-made", "paths": [format!("/{prefix}")],
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
    let mut file = zstd::encode_all(&data[..], 3).unwrap();
    let offset = file.len() as u64;
    file.extend(zstd::encode_all(&trailer[..], 3).unwrap());
    file.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    file.extend_from_slice(&16u32.to_le_bytes());
    file.extend_from_slice(b"STEWARD1");
    file.extend_from_slice(&offset.to_le_bytes());
    let dir = env.dest.join("s");
    fs::create_dir_all(&dir).unwrap();
    let name = format!("{id}.tar.zst");
    fs::write(dir.join(&name), &file).unwrap();
    fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{}  {name}\n", hex::encode(Sha256::digest(&file))),
    )
    .unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| {
            format!(
                "{} {:?}",
                e.path().display(),
                fs::symlink_metadata(e.path()).map(|m| m.len()).ok()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn hostile_archives_are_refused_before_any_byte_is_written() {
    let env = Env::new();
    let target = env.root.join("app");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("live.txt"), "live data\n").unwrap();
    env.one_set("s", &[&target], "");
    let prefix = target
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let p = prefix.clone();
    let escape = env.root.join("escaped");
    let escape_rel = escape
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    type Case = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/../escaped").as_bytes(),
                        EntryType::Regular,
                        None,
                        0o644,
                        b"x",
                    )
                }
            }),
            "`..` component",
        ),
        (
            "absolute",
            Box::new({
                let e = escape.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        e.to_string_lossy().as_bytes(),
                        EntryType::Regular,
                        None,
                        0o644,
                        b"x",
                    )
                }
            }),
            "absolute path",
        ),
        (
            "outside",
            Box::new({
                let e = escape_rel.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(d, e.as_bytes(), EntryType::Regular, None, 0o644, b"x")
                }
            }),
            "outside the backed-up paths",
        ),
        (
            "symlink-abs",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/etc").as_bytes(),
                        EntryType::Symlink,
                        Some(b"/etc"),
                        0o777,
                        b"",
                    )
                }
            }),
            "symlink to /etc",
        ),
        (
            "symlink-rel",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/up").as_bytes(),
                        EntryType::Symlink,
                        Some(b"../../../../../../etc"),
                        0o777,
                        b"",
                    )
                }
            }),
            "points outside",
        ),
        (
            "hardlink",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/h").as_bytes(),
                        EntryType::Link,
                        Some(b"etc/passwd"),
                        0o644,
                        b"",
                    )
                }
            }),
            "hard link to etc/passwd",
        ),
        (
            "device",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/null").as_bytes(),
                        EntryType::Char,
                        None,
                        0o666,
                        b"",
                    )
                }
            }),
            "device node",
        ),
        (
            "block",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/sda").as_bytes(),
                        EntryType::Block,
                        None,
                        0o660,
                        b"",
                    )
                }
            }),
            "device node",
        ),
        (
            "fifo",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/pipe").as_bytes(),
                        EntryType::Fifo,
                        None,
                        0o644,
                        b"",
                    )
                }
            }),
            "FIFO",
        ),
        (
            "setuid",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/su").as_bytes(),
                        EntryType::Regular,
                        None,
                        0o4755,
                        b"#!/bin/sh\n",
                    )
                }
            }),
            "setuid/setgid",
        ),
        (
            "setgid",
            Box::new({
                let p = p.clone();
                move |d: &mut Vec<u8>| {
                    raw_entry(
                        d,
                        format!("{p}/sg").as_bytes(),
                        EntryType::Directory,
                        None,
                        0o2775,
                        b"",
                    )
                }
            }),
            "setuid/setgid",
        ),
    ];
    let parent_before = listing(&env.root.join("app").parent().unwrap().join("app"));
    for (i, (name, evil, reason)) in cases.iter().enumerate() {
        let id = format!("s-202601{:02}T000000Z", i + 1);
        write_archive(&env, &id, &prefix, evil.as_ref());
        env.cmd().args(["backups", "reindex"]).assert().success();
        let a = env.cmd().args(["restore", &id, "--yes"]).assert().code(2);
        let err = stderr(&a);
        assert!(
            err.contains("unsafe entry") && err.contains(reason),
            "{name}: {err}"
        );
        // Nothing written: the target, its siblings and the escape path are untouched.
        assert_eq!(listing(&target), parent_before, "{name} changed the target");
        let siblings: Vec<String> = fs::read_dir(&env.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("steward-"))
            .collect();
        assert!(siblings.is_empty(), "{name} left {siblings:?}");
        assert!(!escape.exists(), "{name} wrote {}", escape.display());
    }
    // The same archive layout with only good entries restores: the corpus is refused for
    // its entries, not for its making.
    write_archive(&env, "s-20260201T000000Z", &prefix, &|_| {});
    env.cmd().args(["backups", "reindex"]).assert().success();
    env.cmd()
        .args(["restore", "s-20260201T000000Z", "--yes"])
        .assert()
        .success();
    assert_eq!(fs::read(target.join("good.txt")).unwrap(), b"good\n");
    assert!(!target.join("live.txt").exists());
}

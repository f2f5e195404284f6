//! Damage is found: a flipped byte or a truncated archive makes `verify` exit 2 and name
//! the archive; the catalog records the failure.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::common::{Env, random_file, stdout, tool};

fn backed_up() -> (Env, PathBuf) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    random_file(&data.join("blob"), 2 << 20, 3);
    for i in 0..50 {
        fs::write(
            data.join(format!("note-{i}.txt")),
            format!("note {i}\n").repeat(100),
        )
        .unwrap();
    }
    env.one_set("s", &[&data], "");
    env.cmd().arg("backup").assert().success();
    let archive = env.archives("s").pop().unwrap();
    (env, archive)
}

fn id_of(archive: &std::path::Path) -> String {
    archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.zst")
        .to_string()
}

#[test]
fn intact_archives_verify() {
    let (env, archive) = backed_up();
    let a = env.cmd().args(["verify", "--all"]).assert().success();
    assert!(stdout(&a).contains(&id_of(&archive)));
    env.cmd()
        .args(["verify", &id_of(&archive)])
        .assert()
        .success();
    env.cmd()
        .args(["verify", "--latest", "--json"])
        .assert()
        .success();
    let a = env.cmd().args(["verify", "no-such-id"]).assert().code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("no-such-id"));
}

#[test]
fn one_flipped_byte_fails_verify_with_exit_2_naming_the_archive() {
    let (env, archive) = backed_up();
    let len = fs::metadata(&archive).unwrap().len();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&archive)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    drop(f);
    let a = env.cmd().arg("verify").assert().code(2);
    let out = stdout(&a);
    assert!(out.contains("FAILED"), "{out}");
    assert!(out.contains(&archive.display().to_string()), "{out}");
    let list = env.list_json().to_string();
    assert!(list.contains("\"failed\""), "{list}");
}

#[test]
fn a_flipped_byte_with_a_matching_forged_sidecar_still_fails() {
    let (env, archive) = backed_up();
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    fs::write(&archive, &bytes).unwrap();
    // Recompute the sidecar so only the content checks can catch it.
    let dir = archive.parent().unwrap();
    let name = archive.file_name().unwrap();
    let line = tool("sha256sum", &[name], dir);
    fs::write(format!("{}.sha256", archive.display()), line).unwrap();
    let a = env.cmd().args(["verify", "--json"]).assert().code(2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(v[0]["ok"], false);
    assert!(
        v[0]["error"]
            .as_str()
            .unwrap()
            .contains(&archive.display().to_string())
    );
}

#[test]
fn a_truncated_archive_fails_verify_with_exit_2() {
    let (env, archive) = backed_up();
    let len = fs::metadata(&archive).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();
    let a = env.cmd().arg("verify").assert().code(2);
    let out = stdout(&a);
    assert!(
        out.contains("FAILED") && out.contains(&id_of(&archive)),
        "{out}"
    );
}

#[test]
fn a_missing_archive_fails_verify() {
    let (env, archive) = backed_up();
    fs::remove_file(&archive).unwrap();
    let a = env.cmd().arg("verify").assert().code(2);
    assert!(
        stdout(&a).contains(&archive.display().to_string()),
        "{}",
        stdout(&a)
    );
}

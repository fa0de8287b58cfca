//! The IoT Edge workload API client: HTTP/1.1 over the module's unix socket (or over TCP
//! for an `http://host:port` workload URI), with hyper.
//!
//! Two calls (edgelet's workload API, version 2018-06-28 and later):
//! - `POST /modules/{module}/genid/{generation}/sign?api-version=…` with
//!   `{"keyId":"primary","algo":"HMACSHA256","data":"<base64 of the string to sign>"}`;
//!   the answer `{"digest":"<base64 HMAC-SHA256>"}` is the SAS signature, made with the
//!   module's key, which the module never sees.
//! - `GET /trust-bundle?api-version=…` → `{"certificate":"<PEM>"}`: the CAs that issued
//!   edgeHub's server certificate.
//!
//! One connection per request: edgelet closes connections beyond 10 per module socket
//! without an answer, and the module makes a request an hour. edgelet checks that the
//! caller's PID belongs to the module's container, so a 403 means the module is not running
//! as that module. The digest is a secret: it never goes into an error or a log.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use thiserror::Error;

use super::identity::WorkloadUri;
use super::sas::encode_component;

/// The largest answer we read; a trust bundle is a few KB.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum WorkloadError {
    #[error("cannot connect to the workload API at {uri}: {source}")]
    Connect {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the workload API at {uri} did not answer {what} within {after:?}")]
    Timeout {
        uri: String,
        what: &'static str,
        after: Duration,
    },
    #[error("HTTP to the workload API failed ({what}): {reason}")]
    Http { what: &'static str, reason: String },
    #[error("the workload API answered {what} with HTTP {status}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the workload API's answer to {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
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

impl WorkloadClient {
    pub fn new(uri: WorkloadUri, api_version: impl Into<String>) -> Self {
        WorkloadClient {
            uri,
            api_version: api_version.into(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// base64(HMAC-SHA256(module key, data)).
    pub async fn sign(
        &self,
        module_id: &str,
        generation_id: &str,
        data: &str,
    ) -> Result<String, WorkloadError> {
        const WHAT: &str = "sign";
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
        let r: SignResponse =
            serde_json::from_slice(&answer).map_err(|e| WorkloadError::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        match BASE64.decode(r.digest.as_bytes()) {
            Ok(bytes) if bytes.len() == 32 => Ok(r.digest),
            Ok(bytes) => Err(WorkloadError::Malformed {
                what: WHAT,
                reason: format!("the digest has {} bytes, not 32", bytes.len()),
            }),
            Err(_) => Err(WorkloadError::Malformed {
                what: WHAT,
                reason: "the digest is not base64".into(),
            }),
        }
    }

    /// The PEM bundle of the CAs to trust for edgeHub.
    pub async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        const WHAT: &str = "trust-bundle";
        let path = format!(
            "/trust-bundle?api-version={}",
            encode_component(&self.api_version)
        );
        let answer = self.request(WHAT, "GET", &path, None).await?;
        let r: TrustBundleResponse =
            serde_json::from_slice(&answer).map_err(|e| WorkloadError::Malformed {
                what: WHAT,
                reason: e.to_string(),
            })?;
        Ok(r.certificate)
    }

    fn uri_text(&self) -> String {
        match &self.uri {
            WorkloadUri::Unix(p) => format!("unix://{}", p.display()),
            WorkloadUri::Http { host, port } => format!("http://{host}:{port}"),
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
            .map_err(|_| WorkloadError::Timeout {
                uri: self.uri_text(),
                what,
                after: self.timeout,
            })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => tracing::debug!(what, elapsed_ms, "workload API call done"),
            Err(e) => tracing::debug!(what, elapsed_ms, error = %e, "workload API call failed"),
        }
        result
    }

    async fn exchange(
        &self,
        what: &'static str,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, WorkloadError> {
        let http = |reason: String| WorkloadError::Http { what, reason };
        let connect = |source| WorkloadError::Connect {
            uri: self.uri_text(),
            source,
        };
        let (host, sender) = match &self.uri {
            WorkloadUri::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
                ("localhost".to_owned(), handshake(TokioIo::new(s)).await)
            }
            WorkloadUri::Http { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect)?;
                (format!("{host}:{port}"), handshake(TokioIo::new(s)).await)
            }
        };
        let mut sender = sender.map_err(|e| http(e.to_string()))?;
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
            .map_err(|e| http(e.to_string()))?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = response.status();
        let bytes = read_limited(response.into_body())
            .await
            .map_err(|reason| WorkloadError::Malformed { what, reason })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorResponse>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            let message: String = message.chars().take(300).collect();
            return Err(WorkloadError::Status {
                what,
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<T>(io: TokioIo<T>) -> Result<Sender, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends when the request is done and the sender dropped.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn read_limited(body: Incoming) -> Result<Bytes, String> {
    match Limited::new(body, MAX_RESPONSE).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(format!("reading the body: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::sas::SharedAccessKey;
    use hyper::Response;
    use hyper::service::service_fn;
    use std::sync::{Arc, Mutex};

    const KEY: &str = "bW9kdWxlLWtleS1mb3ItdGVzdHM="; // base64("module-key-for-tests")

    #[derive(Debug, Clone, Default)]
    struct Seen {
        method: String,
        path: String,
        content_type: Option<String>,
        body: Option<serde_json::Value>,
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        Real,
        NotFound,
        Garbage,
        NotBase64,
        Huge,
        Silent,
    }

    async fn answer(
        req: Request<Incoming>,
        seen: Arc<Mutex<Vec<Seen>>>,
        b: Behaviour,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let method = req.method().to_string();
        let path = req.uri().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        seen.lock().unwrap().push(Seen {
            method,
            path: path.clone(),
            content_type,
            body: body.clone(),
        });
        let text = match b {
            Behaviour::Silent => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                String::new()
            }
            Behaviour::NotFound => {
                return Ok(Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::from(r#"{"message":"Module not found"}"#)))
                    .unwrap());
            }
            Behaviour::Garbage => "not json".into(),
            Behaviour::NotBase64 => r#"{"digest":"***"}"#.into(),
            Behaviour::Huge => format!(r#"{{"certificate":"{}"}}"#, "A".repeat(2 << 20)),
            Behaviour::Real if path.starts_with("/trust-bundle") => {
                r#"{"certificate":"-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"}"#
                    .into()
            }
            Behaviour::Real => {
                let data = body.as_ref().and_then(|b| b["data"].as_str()).unwrap_or("");
                let data = String::from_utf8(BASE64.decode(data).unwrap()).unwrap();
                let digest = SharedAccessKey::from_base64(KEY)
                    .unwrap()
                    .sign(&data)
                    .unwrap();
                serde_json::json!({ "digest": digest }).to_string()
            }
        };
        Ok(Response::new(Full::new(Bytes::from(text))))
    }

    fn serve<L>(listener: L, seen: Arc<Mutex<Vec<Seen>>>, b: Behaviour)
    where
        L: Accept + Send + 'static,
    {
        tokio::spawn(async move {
            loop {
                let Some(io) = listener.next().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, seen.clone(), b));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
    }

    trait Accept {
        fn next(&self) -> impl std::future::Future<Output = Option<TokioIo<Box<dyn Io>>>> + Send;
    }
    trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
    impl Accept for tokio::net::UnixListener {
        async fn next(&self) -> Option<TokioIo<Box<dyn Io>>> {
            let (s, _) = self.accept().await.ok()?;
            Some(TokioIo::new(Box::new(s)))
        }
    }
    impl Accept for tokio::net::TcpListener {
        async fn next(&self) -> Option<TokioIo<Box<dyn Io>>> {
            let (s, _) = self.accept().await.ok()?;
            Some(TokioIo::new(Box::new(s)))
        }
    }

    fn unix_server(b: Behaviour) -> (tempfile::TempDir, WorkloadClient, Arc<Mutex<Vec<Seen>>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        serve(listener, seen.clone(), b);
        let client = WorkloadClient::new(WorkloadUri::Unix(path), "2018-06-28")
            .with_timeout(Duration::from_millis(500));
        (dir, client, seen)
    }

    #[tokio::test]
    async fn sign_over_the_unix_socket_is_the_hmac_of_the_data() {
        let (_d, client, seen) = unix_server(Behaviour::Real);
        let data = "hub%2Fdevices%2Fd%2Fmodules%2Fm\n1700000000";
        let digest = client.sign("azureiotsecurity", "6379", data).await.unwrap();
        assert_eq!(
            digest,
            SharedAccessKey::from_base64(KEY)
                .unwrap()
                .sign(data)
                .unwrap()
        );
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.path,
            "/modules/azureiotsecurity/genid/6379/sign?api-version=2018-06-28"
        );
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
        let body = s.body.unwrap();
        assert_eq!(body["keyId"], "primary");
        assert_eq!(body["algo"], "HMACSHA256");
        assert_eq!(body["data"], BASE64.encode(data));
    }

    #[tokio::test]
    async fn ids_are_encoded_in_the_path_and_tcp_uris_work() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        serve(listener, seen.clone(), Behaviour::Real);
        let client = WorkloadClient::new(
            WorkloadUri::Http {
                host: "127.0.0.1".into(),
                port,
            },
            "2022-08-03",
        );
        client.sign("$edge mod", "g/1", "x").await.unwrap();
        let pem = client.trust_bundle().await.unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].path,
            "/modules/%24edge%20mod/genid/g%2F1/sign?api-version=2022-08-03"
        );
        assert_eq!(seen[1].method, "GET");
        assert_eq!(seen[1].path, "/trust-bundle?api-version=2022-08-03");
        assert_eq!(seen[1].content_type, None);
    }

    #[tokio::test]
    async fn errors_say_what_went_wrong() {
        let (_d, c, _) = unix_server(Behaviour::NotFound);
        match c.sign("m", "g", "x").await {
            Err(WorkloadError::Status {
                status, message, ..
            }) => assert_eq!((status, message.as_str()), (404, "Module not found")),
            other => panic!("{other:?}"),
        }
        let (_d, c, _) = unix_server(Behaviour::Garbage);
        assert!(matches!(
            c.sign("m", "g", "x").await,
            Err(WorkloadError::Malformed { .. })
        ));
        let (_d, c, _) = unix_server(Behaviour::NotBase64);
        match c.sign("m", "g", "x").await {
            Err(e @ WorkloadError::Malformed { .. }) => {
                assert!(e.to_string().contains("not base64"), "{e}");
                assert!(!e.to_string().contains("***"), "no digest in errors");
            }
            other => panic!("{other:?}"),
        }
        let (_d, c, _) = unix_server(Behaviour::Huge);
        assert!(matches!(
            c.trust_bundle().await,
            Err(WorkloadError::Malformed { .. })
        ));
        let (_d, c, _) = unix_server(Behaviour::Silent);
        assert!(matches!(
            c.trust_bundle().await,
            Err(WorkloadError::Timeout { .. })
        ));
        let c = WorkloadClient::new(
            WorkloadUri::Unix("/nonexistent/workload.sock".into()),
            "2018-06-28",
        );
        match c.trust_bundle().await {
            Err(e @ WorkloadError::Connect { .. }) => {
                assert!(e.to_string().contains("/nonexistent/workload.sock"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}

//! What the AMQP connection needs from an identity: where to connect, which CAs to trust,
//! and a fresh SAS token. The connection code does not care whether the module runs under
//! IoT Edge (tokens signed by the workload API, trust bundle from it) or from a connection
//! string for local debugging (signed with the key in it; the CA from
//! `EdgeModuleCACertificateFile`, or the public web roots for IoT Hub itself).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use thiserror::Error;

use super::identity::{HostPort, Identity};
use super::sas::{self, SasError, Token};
use super::tls::{self, TlsError};
use super::workload::{WorkloadClient, WorkloadError};

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("getting the trust bundle: {0}")]
    TrustBundle(#[source] WorkloadError),
    #[error("signing the SAS token with the workload API: {0}")]
    Sign(#[source] WorkloadError),
    #[error("the trust bundle from the workload API: {0}")]
    BadTrustBundle(#[source] TlsError),
    #[error("reading the CA certificate file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA certificate file {path}: {source}")]
    BadCaFile {
        path: PathBuf,
        #[source]
        source: TlsError,
    },
    #[error("making the SAS token: {0}")]
    Sas(#[from] SasError),
}

pub struct Credentials {
    identity: Identity,
    workload: Option<WorkloadClient>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identity's Debug redacts the key.
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(identity: Identity) -> Self {
        let workload = match &identity {
            Identity::Edge {
                workload_uri,
                api_version,
                ..
            } => Some(WorkloadClient::new(
                workload_uri.clone(),
                api_version.clone(),
            )),
            Identity::ConnectionString { .. } => None,
        };
        Credentials { identity, workload }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Host and port to connect to (the gateway, when there is one).
    pub fn endpoint(&self) -> HostPort {
        self.identity.endpoint()
    }

    pub fn audience(&self) -> String {
        self.identity.audience()
    }

    pub fn device_id(&self) -> &str {
        self.identity.device_id()
    }

    pub fn module_id(&self) -> Option<&str> {
        self.identity.module_id()
    }

    /// The TLS configuration, read afresh for each connection (the trust bundle can change
    /// when the edge CA is renewed).
    pub async fn tls_config(&self) -> Result<Arc<ClientConfig>, CredentialsError> {
        let roots = match (&self.identity, &self.workload) {
            (Identity::Edge { .. }, Some(w)) => {
                let pem = w
                    .trust_bundle()
                    .await
                    .map_err(CredentialsError::TrustBundle)?;
                tls::roots_from_pem(&pem).map_err(CredentialsError::BadTrustBundle)?
            }
            (
                Identity::ConnectionString {
                    ca_certificate_file: Some(path),
                    ..
                },
                _,
            ) => {
                let pem = tokio::fs::read_to_string(path).await.map_err(|source| {
                    CredentialsError::CaFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                tls::roots_from_pem(&pem).map_err(|source| CredentialsError::BadCaFile {
                    path: path.clone(),
                    source,
                })?
            }
            _ => tls::webpki_roots(),
        };
        Ok(tls::client_config(roots))
    }

    /// A token valid for `lifetime_secs` from `now_unix`.
    pub async fn token(
        &self,
        now_unix: u64,
        lifetime_secs: u64,
    ) -> Result<Token, CredentialsError> {
        let expiry = sas::expiry_after(now_unix, lifetime_secs)?;
        match (&self.identity, &self.workload) {
            (
                Identity::Edge {
                    module_id,
                    generation_id,
                    ..
                },
                Some(w),
            ) => {
                let audience = self.audience();
                let digest = w
                    .sign(
                        module_id,
                        generation_id,
                        &sas::string_to_sign(&audience, expiry),
                    )
                    .await
                    .map_err(CredentialsError::Sign)?;
                Ok(Token::from_digest(&audience, &digest, expiry)?)
            }
            _ => match self.identity.token_with_key(expiry) {
                Some(t) => Ok(t?),
                // Only an Edge identity has no key, and it always has a workload client.
                None => Err(CredentialsError::Sas(SasError::EmptyKey)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "bW9kdWxlLWtleS1mb3ItdGVzdHM=";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn connection_string_tokens_are_signed_with_its_key() {
        let id = Identity::from_env(&env(&[(
            "IotHubConnectionString",
            &format!("HostName=h.example;DeviceId=d;ModuleId=m;SharedAccessKey={KEY}"),
        )]))
        .unwrap()
        .unwrap();
        let c = Credentials::new(id.clone());
        let t = c.token(1_700_000_000, 3600).await.unwrap();
        let expected = id.token_with_key(1_700_003_600).unwrap().unwrap();
        assert_eq!(t.expose(), expected.expose());
        assert_eq!(c.endpoint().host, "h.example");
        // No CA file: the public roots.
        assert!(c.tls_config().await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_named() {
        let id = Identity::from_env(&env(&[
            (
                "EdgeHubConnectionString",
                &format!(
                    "HostName=h.example;DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=gw"
                ),
            ),
            ("EdgeModuleCACertificateFile", "/nonexistent/ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        let e = Credentials::new(id).tls_config().await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[tokio::test]
    async fn edge_tokens_come_from_the_workload_api() {
        // A workload API that signs with KEY, on a unix socket.
        use base64::Engine;
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let b = req.into_body().collect().await.unwrap().to_bytes();
                        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                        let data = base64::engine::general_purpose::STANDARD
                            .decode(v["data"].as_str().unwrap())
                            .unwrap();
                        let digest = sas::SharedAccessKey::from_base64(KEY)
                            .unwrap()
                            .sign(std::str::from_utf8(&data).unwrap())
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(serde_json::json!({ "digest": digest }).to_string()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let uri = format!("unix://{}", path.display());
        let id = Identity::from_env(&env(&[
            ("IOTEDGE_WORKLOADURI", &uri),
            ("IOTEDGE_DEVICEID", "dev1"),
            ("IOTEDGE_MODULEID", "azureiotsecurity"),
            ("IOTEDGE_MODULEGENERATIONID", "g1"),
            ("IOTEDGE_IOTHUBHOSTNAME", "hub.example"),
            ("IOTEDGE_GATEWAYHOSTNAME", "gw.local:5671"),
            ("IOTEDGE_AUTHSCHEME", "sasToken"),
        ]))
        .unwrap()
        .unwrap();
        let c = Credentials::new(id);
        let t = c.token(1_700_000_000, 20).await.unwrap();
        let local = Token::with_key(
            "hub.example/devices/dev1/modules/azureiotsecurity",
            &sas::SharedAccessKey::from_base64(KEY).unwrap(),
            1_700_000_020,
            None,
        )
        .unwrap();
        assert_eq!(
            t.expose(),
            local.expose(),
            "byte for byte the local signature"
        );
        assert_eq!(c.endpoint().host, "gw.local");
        assert_eq!(c.endpoint().amqps_port(), 5671);
    }
}

//! What the AMQP connection needs from an identity: where to connect, which CAs to trust,
//! and a fresh SAS token. The connection code does not care whether the module runs under
//! IoT Edge (tokens signed by the workload API, trust bundle from it) or from a connection
//! string for local debugging (signed with the key in it; the CA from
//! `EdgeModuleCACertificateFile`, or the public web roots for IoT Hub itself).
//!
//! Errors say which step failed and wrap the cause; none of them, nor `Debug` of
//! [`Credentials`], contains a key, a digest or a token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

use super::identity::{HostPort, Identity};
use super::sas::{self, SasError, Token};
use super::tls::{self, TlsError};
use super::workload::{WorkloadClient, WorkloadError};

/// Why the TLS configuration or a token could not be had.
#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("getting the trust bundle: {0}")]
    TrustBundle(#[source] WorkloadError),
    #[error("signing the SAS token with the workload API: {0}")]
    Sign(#[source] WorkloadError),
    #[error("the trust bundle from the workload API: {0}")]
    BadTrustBundle(#[source] TlsError),
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
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

/// Where tokens and trust anchors come from.
#[derive(Debug)]
enum Source {
    /// Under IoT Edge: the workload API signs and serves the trust bundle.
    Workload(WorkloadClient),
    /// A connection string: its own key; its CA file, else the public roots.
    Key,
}

/// An identity, with what it takes to make its tokens and its TLS configuration.
pub struct Credentials {
    identity: Identity,
    source: Source,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identity's Debug redacts the key.
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// For an IoT Edge identity, a workload API client on its `IOTEDGE_WORKLOADURI` with
    /// its `IOTEDGE_APIVERSION`.
    pub fn new(identity: Identity) -> Self {
        let source = match &identity {
            Identity::Edge {
                workload_uri,
                api_version,
                ..
            } => Source::Workload(WorkloadClient::new(
                workload_uri.clone(),
                api_version.clone(),
            )),
            Identity::ConnectionString { .. } => Source::Key,
        };
        Credentials { identity, source }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Host and port to connect to (the gateway, when there is one); the host is also the
    /// name the server certificate must be valid for.
    pub fn endpoint(&self) -> HostPort {
        self.identity.endpoint()
    }

    /// The token audience, not yet encoded.
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
        let roots = match (&self.source, &self.identity) {
            (Source::Workload(w), _) => {
                let pem = w
                    .trust_bundle()
                    .await
                    .map_err(CredentialsError::TrustBundle)?;
                tls::roots_from_pem(&pem).map_err(CredentialsError::BadTrustBundle)?
            }
            (
                Source::Key,
                Identity::ConnectionString {
                    ca_certificate_file: Some(path),
                    ..
                },
            ) => roots_from_file(path).await?,
            (Source::Key, _) => tls::webpki_roots(),
        };
        tls::client_config(roots).map_err(CredentialsError::Tls)
    }

    /// A token valid for `lifetime_secs` from `now_unix`.
    pub async fn token(
        &self,
        now_unix: u64,
        lifetime_secs: u64,
    ) -> Result<Token, CredentialsError> {
        let expiry = sas::expiry_after(now_unix, lifetime_secs)?;
        match (&self.source, &self.identity) {
            (
                Source::Workload(w),
                Identity::Edge {
                    module_id,
                    generation_id,
                    ..
                },
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

/// The trust anchors of a PEM file; errors name the file.
async fn roots_from_file(path: &Path) -> Result<RootCertStore, CredentialsError> {
    let pem = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| CredentialsError::CaFile {
            path: path.to_owned(),
            source,
        })?;
    tls::roots_from_pem(&pem).map_err(|source| CredentialsError::BadCaFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::tls::tests::{ca, server};
    use crate::edge::workload::tests::{Behaviour, KEY, Log, unix_server_with_bundle};
    use base64::Engine;
    use std::collections::HashMap;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NOW: u64 = 1_700_000_000;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key() -> sas::SharedAccessKey {
        sas::SharedAccessKey::from_base64(KEY).unwrap()
    }

    /// An IoT Edge identity whose workload API is the stand-in (answering as `b`, serving
    /// `bundle`), gateway `gateway`.
    fn edge(b: Behaviour, bundle: &str, gateway: &str) -> (tempfile::TempDir, Credentials, Log) {
        let (dir, _, seen) = unix_server_with_bundle(b, bundle);
        let uri = format!("unix://{}", dir.path().join("workload.sock").display());
        let id = Identity::from_env(&env(&[
            ("IOTEDGE_WORKLOADURI", &uri),
            ("IOTEDGE_DEVICEID", "dev1"),
            ("IOTEDGE_MODULEID", "azureiotsecurity"),
            ("IOTEDGE_MODULEGENERATIONID", "g1"),
            ("IOTEDGE_IOTHUBHOSTNAME", "hub.example"),
            ("IOTEDGE_GATEWAYHOSTNAME", gateway),
            ("IOTEDGE_AUTHSCHEME", "sasToken"),
            ("IOTEDGE_APIVERSION", "2019-01-30"),
        ]))
        .unwrap()
        .unwrap();
        (dir, Credentials::new(id), seen)
    }

    fn connection_string(ca_file: Option<&str>) -> Credentials {
        let cs = format!(
            "HostName=h.example;DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=localhost"
        );
        let mut pairs = vec![("EdgeHubConnectionString", cs.as_str())];
        if let Some(f) = ca_file {
            pairs.push(("EdgeModuleCACertificateFile", f));
        }
        Credentials::new(Identity::from_env(&env(&pairs)).unwrap().unwrap())
    }

    async fn echoes(config: Arc<ClientConfig>, port: u16) -> Result<(), TlsError> {
        let mut s = tls::connect(config, "localhost", port, Duration::from_secs(5)).await?;
        s.write_all(b"amqp").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"amqp");
        Ok(())
    }

    #[tokio::test]
    async fn edge_tokens_are_signed_by_the_workload_api_byte_for_byte() {
        let (_d, c, seen) = edge(Behaviour::Real, "", "gw.local:5671");
        let t = c.token(NOW, 20).await.unwrap();
        let audience = "hub.example/devices/dev1/modules/azureiotsecurity";
        let local = Token::with_key(audience, &key(), NOW + 20, None).unwrap();
        assert_eq!(t.expose(), local.expose());
        assert_eq!(t.expiry(), NOW + 20);

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(
            seen[0].path,
            "/modules/azureiotsecurity/genid/g1/sign?api-version=2019-01-30"
        );
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
        let body = seen[0].body.as_ref().unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(body["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(data).unwrap(),
            sas::string_to_sign(audience, NOW + 20)
        );
        assert_eq!(
            (&body["keyId"], &body["algo"]),
            (&"primary".into(), &"HMACSHA256".into())
        );
    }

    #[tokio::test]
    async fn edge_accessors_point_at_the_gateway() {
        let (_d, c, _) = edge(Behaviour::Real, "", "gw.local:5671");
        assert_eq!(c.endpoint().host, "gw.local");
        assert_eq!(c.endpoint().amqps_port(), 5671);
        assert_eq!(
            c.audience(),
            "hub.example/devices/dev1/modules/azureiotsecurity"
        );
        assert_eq!(c.device_id(), "dev1");
        assert_eq!(c.module_id(), Some("azureiotsecurity"));
        assert!(matches!(c.identity(), Identity::Edge { .. }));
    }

    #[tokio::test]
    async fn edge_tls_trusts_the_workload_trust_bundle_and_nothing_else() {
        let (edge_ca, other) = (ca("edge CA"), ca("someone else"));
        let (_d, c, seen) = edge(Behaviour::Real, &edge_ca.pem, "localhost");
        let config = c.tls_config().await.unwrap();
        assert_eq!(
            seen.lock().unwrap()[0].path,
            "/trust-bundle?api-version=2019-01-30"
        );
        echoes(config.clone(), server(&edge_ca, &["localhost"]).await)
            .await
            .unwrap();
        match echoes(config, server(&other, &["localhost"]).await).await {
            Err(TlsError::Handshake { reason, .. }) => {
                assert!(reason.contains("UnknownIssuer"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn workload_failures_say_which_step() {
        let (_d, c, _) = edge(Behaviour::NotFound, "", "localhost");
        let e = c.token(NOW, 3600).await.unwrap_err();
        assert!(matches!(
            e,
            CredentialsError::Sign(WorkloadError::Status { status: 404, .. })
        ));
        assert_eq!(
            e.to_string(),
            "signing the SAS token with the workload API: \
             the workload API answered sign with HTTP 404: Module not found"
        );
        let e = c.tls_config().await.unwrap_err();
        assert!(
            e.to_string().starts_with("getting the trust bundle: "),
            "{e}"
        );

        // A trust bundle without a certificate.
        let (_d, c, _) = edge(Behaviour::Real, "no PEM here", "localhost");
        let e = c.tls_config().await.unwrap_err();
        assert!(matches!(
            e,
            CredentialsError::BadTrustBundle(TlsError::NoCertificate)
        ));
        assert_eq!(
            e.to_string(),
            "the trust bundle from the workload API: the PEM bundle has no certificate"
        );
    }

    #[tokio::test]
    async fn connection_string_tokens_are_signed_with_its_key() {
        let c = connection_string(None);
        let t = c.token(NOW, 3600).await.unwrap();
        let expected =
            Token::with_key("h.example/devices/d/modules/m", &key(), NOW + 3600, None).unwrap();
        assert_eq!(t.expose(), expected.expose());
        assert_eq!(c.endpoint().host, "localhost");
        assert_eq!(c.endpoint().amqps_port(), 5671);
    }

    #[tokio::test]
    async fn without_a_ca_file_the_public_roots_are_trusted() {
        let c = connection_string(None);
        let config = c.tls_config().await.unwrap();
        // A private CA is not among them.
        let private = ca("edge CA");
        match echoes(config, server(&private, &["localhost"]).await).await {
            Err(TlsError::Handshake { reason, .. }) => {
                assert!(reason.contains("UnknownIssuer"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_ca_file_is_the_trust_anchor() {
        let edge_ca = ca("edge CA");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, &edge_ca.pem).unwrap();
        let c = connection_string(Some(file.to_str().unwrap()));
        let config = c.tls_config().await.unwrap();
        echoes(config, server(&edge_ca, &["localhost"]).await)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ca_file_problems_name_the_file() {
        let c = connection_string(Some("/nonexistent/ca.pem"));
        let e = c.tls_config().await.unwrap_err();
        assert!(matches!(&e, CredentialsError::CaFile { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound));
        assert!(
            e.to_string()
                .starts_with("reading the CA certificate file /nonexistent/ca.pem: "),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key-not-cert.pem");
        std::fs::write(
            &file,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let c = connection_string(Some(file.to_str().unwrap()));
        let e = c.tls_config().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the CA certificate file {}: the PEM bundle has no certificate",
                file.display()
            )
        );
    }

    #[tokio::test]
    async fn nothing_shown_contains_a_secret() {
        let (_d, c, _) = edge(Behaviour::Real, "", "localhost");
        let t = c.token(NOW, 60).await.unwrap();
        let sig = t.expose();
        let sig = sig.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        for shown in [format!("{c:?}"), format!("{t}"), format!("{t:?}")] {
            assert!(!shown.contains(sig), "{shown}");
        }
        let c = connection_string(None);
        assert!(!format!("{c:?}").contains(KEY), "{c:?}");
        let e = CredentialsError::Sas(SasError::EmptyKey);
        assert!(!e.to_string().contains(KEY));
    }
}

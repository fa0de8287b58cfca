//! TLS to edgeHub (or IoT Hub) with rustls and the ring provider.
//!
//! edgeHub's server certificate is issued by the device's own edge CA, not by a public
//! one, so the trust anchor is the PEM bundle the workload API serves at `/trust-bundle`
//! (the C SDK: "Because the Edge Hub almost always use self-signed certificates, we need to
//! specify which certificates to trust"). The certificate is checked against the gateway
//! host name (`IOTEDGE_GATEWAYHOSTNAME`), which edgelet puts in the certificate's SAN.
//! There is deliberately no option to skip verification: a module that trusts anything
//! would send a device's security record to whoever answers on port 5671.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("the trust bundle has no certificate")]
    NoCertificate,
    #[error("the trust bundle's certificate {index} is unreadable: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {host}:{port} failed: {reason}")]
    Handshake {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("connecting to {host}:{port} timed out after {after:?}")]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
}

/// The certificates of a PEM bundle, as trust anchors.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for (index, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| TlsError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::NoCertificate);
    }
    Ok(roots)
}

/// The public web roots (webpki-roots), for a connection string straight to IoT Hub without
/// a CA file.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client configuration with the ring provider, safe protocol versions, no client
/// certificate.
pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // The ring provider supports the safe defaults; this arm is not reachable with it.
            Err(_) => ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        };
    Arc::new(config)
}

/// TCP connect, then the TLS handshake, verifying the server as `host`.
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let name =
        ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))?;
    let attempt = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|source| TlsError::Connect {
                host: host.to_owned(),
                port,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| TlsError::Handshake {
                host: host.to_owned(),
                port,
                reason: e.to_string(),
            })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| TlsError::Timeout {
            host: host.to_owned(),
            port,
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        der: CertificateDer<'static>,
    }

    fn ca(name: &str) -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// An echo server with a certificate for `names`, signed by `ca`.
    async fn server(ca: &Ca, names: &[&str]) -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der.clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 64];
                        if let Ok(n) = s.read(&mut buf).await {
                            let _ = s.write_all(&buf[..n]).await;
                            let _ = s.flush().await;
                        }
                    }
                });
            }
        });
        port
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn verifies_against_the_bundle_and_the_host_name() {
        let ca1 = ca("edge CA");
        let port = server(&ca1, &["localhost"]).await;
        let config = client_config(roots_from_pem(&ca1.pem).unwrap());
        let mut s = connect(config, "localhost", port, T).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn another_ca_is_refused() {
        let (ca1, other) = (ca("edge CA"), ca("someone else"));
        let port = server(&ca1, &["localhost"]).await;
        let config = client_config(roots_from_pem(&other.pem).unwrap());
        match connect(config, "localhost", port, T).await {
            Err(TlsError::Handshake { reason, .. }) => {
                assert!(reason.contains("UnknownIssuer"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_refused() {
        let ca1 = ca("edge CA");
        let port = server(&ca1, &["edgehub.example"]).await;
        let config = client_config(roots_from_pem(&ca1.pem).unwrap());
        match connect(config, "localhost", port, T).await {
            Err(TlsError::Handshake { reason, .. }) => {
                assert!(
                    reason.contains("not valid for name \"localhost\""),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = client_config(webpki_roots());
        match connect(config, "127.0.0.1", port, T).await {
            Err(TlsError::Connect { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bundles_without_certificates_are_named_errors() {
        assert!(matches!(roots_from_pem(""), Err(TlsError::NoCertificate)));
        assert!(matches!(
            roots_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(TlsError::NoCertificate)
        ));
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            roots_from_pem(bad),
            Err(TlsError::BadCertificate { index: 0, .. })
        ));
        assert!(!webpki_roots().is_empty());
    }
}

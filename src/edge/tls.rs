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

/// Why a trust bundle or a TLS connection failed.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The PEM text has no `CERTIFICATE` block.
    #[error("the PEM bundle has no certificate")]
    NoCertificate,
    /// Certificate `index` (from 0, in PEM order) is not base64 DER or rustls refuses it
    /// as a trust anchor.
    #[error("certificate {index} (counting from 0) of the PEM bundle is refused: {reason}")]
    BadCertificate { index: usize, reason: String },
    /// rustls refused the configuration (the compiled-in provider lacks the protocol
    /// versions; not reachable from outside data, but not a reason to panic either).
    #[error("the TLS configuration is refused: {0}")]
    Config(String),
    /// The host is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid server name (a DNS name or an IP address)")]
    ServerName(String),
    /// The TCP connection failed (refused, unreachable, name not resolved).
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed; `reason` is rustls's text (unknown issuer, not valid for
    /// name, expired…), which is what tells an operator which side is misconfigured.
    #[error("TLS handshake with {host}:{port} failed: {reason}")]
    Handshake {
        host: String,
        port: u16,
        reason: String,
    },
    /// TCP connect and handshake together took longer than the timeout.
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

/// A client configuration with the ring provider, safe protocol versions (TLS 1.2 and
/// 1.3), the given trust anchors, no client certificate. Verification is rustls's default
/// (chain to `roots`, validity dates, server name); nothing here can turn it off.
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TCP connect, then the TLS handshake, verifying the server as `host` (the gateway host
/// name: a DNS name checked against the certificate's DNS SANs, or an IP address checked
/// against its IP SANs), all within `timeout`.
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
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA made with rcgen.
    pub(crate) struct Ca {
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        der: CertificateDer<'static>,
    }

    pub(crate) fn ca(name: &str) -> Ca {
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
    pub(crate) async fn server(ca: &Ca, names: &[&str]) -> u16 {
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
        let config = client_config(roots_from_pem(&ca1.pem).unwrap()).unwrap();
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
        let config = client_config(roots_from_pem(&other.pem).unwrap()).unwrap();
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
        let config = client_config(roots_from_pem(&ca1.pem).unwrap()).unwrap();
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
    async fn an_ip_address_is_checked_against_ip_sans() {
        let ca1 = ca("edge CA");
        let config = client_config(roots_from_pem(&ca1.pem).unwrap()).unwrap();
        // Only DNS:localhost: 127.0.0.1 is not a name the certificate is valid for.
        let port = server(&ca1, &["localhost"]).await;
        match connect(config.clone(), "127.0.0.1", port, T).await {
            Err(e @ TlsError::Handshake { .. }) => {
                let text = e.to_string();
                assert!(text.contains("not valid for name"), "{text}");
                assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // An IP SAN: accepted.
        let port = server(&ca1, &["127.0.0.1"]).await;
        let mut s = connect(config, "127.0.0.1", port, T).await.unwrap();
        s.write_all(b"ip").await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ip");
    }

    #[tokio::test]
    async fn a_bad_server_name_is_refused_before_connecting() {
        let config = client_config(webpki_roots()).unwrap();
        match connect(config, "not a host", 5671, T).await {
            Err(e @ TlsError::ServerName(_)) => {
                assert_eq!(
                    e.to_string(),
                    "\"not a host\" is not a valid server name (a DNS name or an IP address)"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp); // accepted, never a byte back
            }
        });
        let ca1 = ca("edge CA");
        let config = client_config(roots_from_pem(&ca1.pem).unwrap()).unwrap();
        let after = Duration::from_millis(200);
        match connect(config, "localhost", port, after).await {
            Err(TlsError::Timeout {
                host,
                port: p,
                after: a,
            }) => assert_eq!((host.as_str(), p, a), ("localhost", port, after)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = client_config(webpki_roots()).unwrap();
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
        // The index says which one: here the second.
        let ca1 = ca("edge CA");
        match roots_from_pem(&format!("{}{bad}", ca1.pem)) {
            Err(e @ TlsError::BadCertificate { index: 1, .. }) => {
                assert!(
                    e.to_string().starts_with("certificate 1 (counting from 0)"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(!webpki_roots().is_empty());
    }

    #[test]
    fn every_certificate_of_a_bundle_is_a_root() {
        let (a, b) = (ca("root A"), ca("root B"));
        let bundle = format!("{}\n{}", a.pem, b.pem);
        assert_eq!(roots_from_pem(&bundle).unwrap().len(), 2);
        // Text around the blocks (as in bundles with comments) is ignored.
        let commented = format!("# edge CA\n{}trailing words\n", a.pem);
        assert_eq!(roots_from_pem(&commented).unwrap().len(), 1);
    }
}

//! The one set of test certificates: a CA (it plays the IoT Edge CA the module trusts) and a
//! server certificate for `localhost` signed by it (edgeHub's), made in-process with rcgen, so
//! no openssl is needed. Written as PEM files for the child-process stand-ins (Proton, the
//! workload API, Node) and kept as a rustls server configuration for the in-process edgeHub.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A test CA and a server certificate for `localhost` signed by it.
pub struct Certs {
    /// The CA certificate (PEM): what the module trusts (`EdgeModuleCACertificateFile`).
    pub ca: PathBuf,
    /// The server certificate followed by the CA (PEM), as edgeHub presents it.
    pub chain: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
    server: Arc<rustls::ServerConfig>,
    /// Present when `temp` made the directory: removed with the certificates.
    _dir: Option<tempfile::TempDir>,
}

impl Certs {
    /// The module's identity from a connection string straight to a test edgeHub on
    /// `localhost:port` that trusts these certificates (no workload API: the token is signed
    /// with `key_b64` in the test process).
    pub fn module_credentials(
        &self,
        hub: &str,
        device: &str,
        module: &str,
        key_b64: &str,
        port: u16,
    ) -> Arc<azureiotsecurity::edge::credentials::Credentials> {
        use azureiotsecurity::edge::{credentials::Credentials, identity::Identity};
        let env = std::collections::HashMap::from([
            (
                "IotHubConnectionString".to_string(),
                format!(
                    "HostName={hub};DeviceId={device};ModuleId={module};SharedAccessKey={key_b64};GatewayHostName=localhost:{port}"
                ),
            ),
            (
                "EdgeModuleCACertificateFile".to_string(),
                self.ca.display().to_string(),
            ),
        ]);
        let identity = Identity::from_env(&env)
            .expect("a valid test identity")
            .expect("an identity in the environment");
        Arc::new(Credentials::new(identity))
    }

    /// Makes the certificates and writes `ca.pem`, `server-chain.pem` and `server.key` in
    /// `dir`.
    pub fn make(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "azureiotsecurity test edge CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        std::fs::create_dir_all(dir).expect("certificate directory");
        let (ca, chain, key_path) = (
            dir.join("ca.pem"),
            dir.join("server-chain.pem"),
            dir.join("server.key"),
        );
        std::fs::write(&ca, ca_cert.pem()).expect("write ca.pem");
        std::fs::write(&chain, cert.pem() + &ca_cert.pem()).expect("write server-chain.pem");
        std::fs::write(&key_path, key.serialize_pem()).expect("write server.key");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS configuration");
        Certs {
            ca,
            chain,
            key: key_path,
            server: Arc::new(server),
            _dir: None,
        }
    }

    /// `make` in a temporary directory that lives as long as the certificates.
    pub fn temp() -> Certs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut c = Certs::make(dir.path());
        c._dir = Some(dir);
        c
    }

    /// The server side of TLS with the `localhost` certificate (for in-process servers).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
}

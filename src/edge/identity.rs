//! Who the module is and how it authenticates, from the environment ([`Identity::from_env`]):
//! a connection string (local debugging) or the `IOTEDGE_*` variables edgeAgent sets (signing
//! through the workload API, no key in the module). With neither, `Ok(None)`: the caller
//! prints the messages instead of sending them. The environment is passed in as a map so
//! tests do not touch the process's ([`process_env`] collects the real one). No key ever
//! appears in `Debug` output or in an error message.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::sas::{self, SasError, SharedAccessKey};

/// `IOTEDGE_WORKLOADURI`: where the workload API listens.
pub const WORKLOAD_URI: &str = "IOTEDGE_WORKLOADURI";
/// `IOTEDGE_DEVICEID`.
pub const DEVICE_ID: &str = "IOTEDGE_DEVICEID";
/// `IOTEDGE_MODULEID`.
pub const MODULE_ID: &str = "IOTEDGE_MODULEID";
/// `IOTEDGE_MODULEGENERATIONID`: part of the workload API's sign path.
pub const GENERATION_ID: &str = "IOTEDGE_MODULEGENERATIONID";
/// `IOTEDGE_IOTHUBHOSTNAME`: the hub's FQDN, the host of the token audience.
pub const IOTHUB_HOSTNAME: &str = "IOTEDGE_IOTHUBHOSTNAME";
/// `IOTEDGE_GATEWAYHOSTNAME`: edgeHub's host name (`host` or `host:port`).
pub const GATEWAY_HOSTNAME: &str = "IOTEDGE_GATEWAYHOSTNAME";
/// `IOTEDGE_APIVERSION`: the workload API version edgeAgent passes through (optional).
pub const API_VERSION: &str = "IOTEDGE_APIVERSION";
/// `IOTEDGE_AUTHSCHEME`: must be `sasToken`.
pub const AUTH_SCHEME: &str = "IOTEDGE_AUTHSCHEME";
/// Local debugging: a module (or device) connection string.
pub const EDGEHUB_CONNECTION_STRING: &str = "EdgeHubConnectionString";
/// Local debugging, second choice (Node and C# SDKs read it too).
pub const IOTHUB_CONNECTION_STRING: &str = "IotHubConnectionString";
/// Local debugging: PEM file of the CA that signed edgeHub's server certificate.
pub const CA_CERTIFICATE_FILE: &str = "EdgeModuleCACertificateFile";

/// The workload API version the C and C# SDKs use when none is given; the lowest the
/// current `sign` route accepts.
pub const DEFAULT_WORKLOAD_API_VERSION: &str = "2018-06-28";
/// The only `IOTEDGE_AUTHSCHEME` supported (compared case-insensitively, as C# does).
pub const SAS_TOKEN_SCHEME: &str = "sasToken";
/// edgeHub's AMQPS port, used when a gateway host name carries no port.
pub const AMQPS_PORT: u16 = 5671;

/// The `IOTEDGE_*` variables whose presence means "running under IoT Edge".
const EDGE_VARIABLES: [&str; 7] = [
    WORKLOAD_URI,
    DEVICE_ID,
    MODULE_ID,
    GENERATION_ID,
    IOTHUB_HOSTNAME,
    GATEWAY_HOSTNAME,
    AUTH_SCHEME,
];

/// What is wrong with the environment or the connection string. Never carries a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is missing or empty (the IoT Edge environment needs it)")]
    MissingVariable(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {variable} is invalid: {reason}")]
    InvalidVariable {
        /// Its name.
        variable: &'static str,
        /// Why (never the value of a secret).
        reason: String,
    },
    /// `IOTEDGE_AUTHSCHEME` is not `sasToken`.
    #[error("environment variable {AUTH_SCHEME} is {0:?}: only {SAS_TOKEN_SCHEME:?} is supported")]
    UnsupportedAuthScheme(String),
    /// The connection string is malformed.
    #[error("connection string in {variable} is invalid: {reason}")]
    InvalidConnectionString {
        /// The variable it came from.
        variable: &'static str,
        /// Why (never the key, never the whole string).
        reason: String,
    },
}

/// Where the workload API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadUri {
    /// `unix:///path/to/workload.sock` (the usual form).
    Unix(PathBuf),
    /// `http://host:port` (older setups, Windows).
    Http {
        /// Host.
        host: String,
        /// Port (80 when none is given).
        port: u16,
    },
}

/// A host with an optional port, as in `IOTEDGE_GATEWAYHOSTNAME` or `GatewayHostName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, when one was given.
    pub port: Option<u16>,
}

impl HostPort {
    /// The port to connect to for AMQPS: the given one, else 5671.
    pub fn amqps_port(&self) -> u16 {
        self.port.unwrap_or(AMQPS_PORT)
    }
}

/// The module's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Under IoT Edge: the workload API signs for us.
    Edge {
        /// Where the workload API listens.
        workload_uri: WorkloadUri,
        /// Device id.
        device_id: String,
        /// Module id.
        module_id: String,
        /// Module generation id (for the workload API's sign path).
        generation_id: String,
        /// IoT Hub FQDN: the host of the token audience.
        iothub_hostname: String,
        /// edgeHub: the host to connect to and to check its certificate against.
        gateway: HostPort,
        /// Workload API version (`IOTEDGE_APIVERSION`, else the SDKs' default).
        api_version: String,
    },
    /// A connection string (local debugging); signs with its own key.
    ConnectionString {
        /// The variable it came from.
        source: &'static str,
        /// IoT Hub FQDN (`HostName`): the host of the token audience.
        hostname: String,
        /// `DeviceId`.
        device_id: String,
        /// `ModuleId`, absent in a device connection string.
        module_id: Option<String>,
        /// `SharedAccessKeyName`, when the key is a policy's.
        key_name: Option<String>,
        /// `SharedAccessKey`, decoded (redacted in `Debug`).
        key: SharedAccessKey,
        /// `GatewayHostName`: edgeHub, when going through it.
        gateway: Option<HostPort>,
        /// `EdgeModuleCACertificateFile`: the CA to trust for the gateway.
        ca_certificate_file: Option<PathBuf>,
    },
}

impl Identity {
    /// Reads the identity from `env`; `Ok(None)` when there is no IoT Edge environment and
    /// no connection string. Two sources, in the order the Azure IoT SDKs try them (Node
    /// `ModuleClient.fromEnvironment`, C# `EdgeModuleClientFactory`, C
    /// `IoTHubClientCore_LL_CreateFromEnvironment`): a connection string in
    /// `EdgeHubConnectionString` (or `IotHubConnectionString`), with edgeHub's CA in the file
    /// `EdgeModuleCACertificateFile` (against a real edgeHub or straight to IoT Hub), wins
    /// over the `IOTEDGE_*` variables edgeAgent sets for every module.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, IdentityError> {
        for variable in [EDGEHUB_CONNECTION_STRING, IOTHUB_CONNECTION_STRING] {
            if let Some(cs) = non_empty(env, variable) {
                let ca_certificate_file = non_empty(env, CA_CERTIFICATE_FILE).map(PathBuf::from);
                return parse_connection_string(variable, cs, ca_certificate_file).map(Some);
            }
        }
        if EDGE_VARIABLES.iter().all(|v| !env.contains_key(*v)) {
            return Ok(None);
        }
        Self::from_edge_env(env).map(Some)
    }

    fn from_edge_env(env: &HashMap<String, String>) -> Result<Self, IdentityError> {
        let require = |variable: &'static str| {
            non_empty(env, variable).ok_or(IdentityError::MissingVariable(variable))
        };
        let scheme = require(AUTH_SCHEME)?;
        if !scheme.eq_ignore_ascii_case(SAS_TOKEN_SCHEME) {
            return Err(IdentityError::UnsupportedAuthScheme(scheme.to_owned()));
        }
        let workload_uri = parse_workload_uri(require(WORKLOAD_URI)?)?;
        let device_id = require(DEVICE_ID)?.to_owned();
        let module_id = require(MODULE_ID)?.to_owned();
        let generation_id = require(GENERATION_ID)?.to_owned();
        let iothub_hostname = require(IOTHUB_HOSTNAME)?;
        check_host(iothub_hostname).map_err(|reason| IdentityError::InvalidVariable {
            variable: IOTHUB_HOSTNAME,
            reason,
        })?;
        let gateway = parse_host_port(require(GATEWAY_HOSTNAME)?).map_err(|reason| {
            IdentityError::InvalidVariable {
                variable: GATEWAY_HOSTNAME,
                reason,
            }
        })?;
        let api_version = non_empty(env, API_VERSION)
            .unwrap_or(DEFAULT_WORKLOAD_API_VERSION)
            .to_owned();
        Ok(Self::Edge {
            workload_uri,
            device_id,
            module_id,
            generation_id,
            iothub_hostname: iothub_hostname.to_owned(),
            gateway,
            api_version,
        })
    }

    /// The token audience, not yet encoded: `{hub}/devices/{device}[/modules/{module}]`.
    pub fn audience(&self) -> String {
        match self {
            Self::Edge {
                iothub_hostname,
                device_id,
                module_id,
                ..
            } => sas::module_audience(iothub_hostname, device_id, module_id),
            Self::ConnectionString {
                hostname,
                device_id,
                module_id: Some(module_id),
                ..
            } => sas::module_audience(hostname, device_id, module_id),
            Self::ConnectionString {
                hostname,
                device_id,
                module_id: None,
                ..
            } => sas::device_audience(hostname, device_id),
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        match self {
            Self::Edge { device_id, .. } | Self::ConnectionString { device_id, .. } => device_id,
        }
    }

    /// The module id, if this is a module identity.
    pub fn module_id(&self) -> Option<&str> {
        match self {
            Self::Edge { module_id, .. } => Some(module_id),
            Self::ConnectionString { module_id, .. } => module_id.as_deref(),
        }
    }

    /// Where to connect: the gateway (edgeHub) if there is one, else the hub itself, with
    /// the AMQPS port (5671 unless the host name carries one).
    pub fn endpoint(&self) -> HostPort {
        match self {
            Self::Edge { gateway, .. }
            | Self::ConnectionString {
                gateway: Some(gateway),
                ..
            } => gateway.clone(),
            Self::ConnectionString { hostname, .. } => HostPort {
                host: hostname.clone(),
                port: None,
            },
        }
    }

    /// A token for this identity when it holds a key (connection strings); `None` under
    /// IoT Edge, where the workload API signs [`sas::string_to_sign`] instead.
    pub fn token_with_key(&self, expiry: u64) -> Option<Result<sas::Token, SasError>> {
        match self {
            Self::Edge { .. } => None,
            Self::ConnectionString { key, key_name, .. } => Some(sas::Token::with_key(
                &self.audience(),
                key,
                expiry,
                key_name.as_deref(),
            )),
        }
    }
}

/// The process environment as a map. Values that are not UTF-8 are converted lossily, so
/// a broken variable is reported as invalid rather than missing.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

fn non_empty<'a>(env: &'a HashMap<String, String>, variable: &str) -> Option<&'a str> {
    env.get(variable)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

fn parse_workload_uri(value: &str) -> Result<WorkloadUri, IdentityError> {
    let invalid = |reason: &str| IdentityError::InvalidVariable {
        variable: WORKLOAD_URI,
        reason: format!("{reason} (got {value:?}; expected unix:///path or http://host:port)"),
    };
    if let Some(path) = value.strip_prefix("unix://") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(invalid("the socket path must be absolute"));
        }
        return Ok(WorkloadUri::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = value.strip_prefix("http://") {
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(invalid("an http workload URI takes no path"));
        }
        let HostPort { host, port } = parse_host_port(authority).map_err(|r| invalid(&r))?;
        return Ok(WorkloadUri::Http {
            host,
            port: port.unwrap_or(80),
        });
    }
    Err(invalid("unsupported scheme"))
}

/// Checks a bare host name: non-empty, no spaces, slashes or other URI delimiters.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".to_owned());
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "/\\?#@;&=".contains(*c))
    {
        return Err(format!("host name {host:?} contains {c:?}"));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address is taken as a host.
fn parse_host_port(value: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{value:?} has '[' without ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{value:?} has text after ']' that is not :port")),
            },
        }
    } else {
        match value.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (value, None),
        }
    };
    check_host(host)?;
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "port {p:?} in {value:?} is not a number from 1 to 65535"
            )),
        })
        .transpose()?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// The keys the module understands. Matching is case-insensitive (C# SDK); unknown keys
/// are ignored, as both the C# and Node SDKs do; a key given twice is an error (C#).
const HOST_NAME: &str = "HostName";
const DEVICE_ID_KEY: &str = "DeviceId";
const MODULE_ID_KEY: &str = "ModuleId";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const GATEWAY_HOST_NAME: &str = "GatewayHostName";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const X509: &str = "x509";

/// Parses `HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…[;GatewayHostName=…]`.
///
/// Pairs may come in any order, with spaces around them, and with empty segments (a
/// trailing `;`); a value may contain `=` (base64 keys end with it).
fn parse_connection_string(
    variable: &'static str,
    text: &str,
    ca_certificate_file: Option<PathBuf>,
) -> Result<Identity, IdentityError> {
    let invalid = |reason: String| IdentityError::InvalidConnectionString { variable, reason };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (index, segment) in text.split(';').enumerate() {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        // The segment itself is never echoed: it may be the key.
        let (key, value) = segment
            .split_once('=')
            .ok_or_else(|| invalid(format!("segment {} has no '='", index + 1)))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(invalid(format!("segment {} has no name", index + 1)));
        }
        if let Some((first, _)) = pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(invalid(format!("{first} is given more than once")));
        }
        pairs.push((key, value));
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let optional = |name: &'static str| match get(name) {
        Some("") => Err(invalid(format!("{name} is empty"))),
        other => Ok(other),
    };
    let required =
        |name: &'static str| optional(name)?.ok_or_else(|| invalid(format!("{name} is missing")));

    let hostname = required(HOST_NAME)?;
    check_host(hostname).map_err(|r| invalid(format!("{HOST_NAME}: {r}")))?;
    let device_id = required(DEVICE_ID_KEY)?;
    let module_id = optional(MODULE_ID_KEY)?;
    let key_name = optional(SHARED_ACCESS_KEY_NAME)?;
    let gateway = optional(GATEWAY_HOST_NAME)?
        .map(parse_host_port)
        .transpose()
        .map_err(|r| invalid(format!("{GATEWAY_HOST_NAME}: {r}")))?;
    let key = match optional(SHARED_ACCESS_KEY)? {
        Some(key) => SharedAccessKey::from_base64(key)
            .map_err(|e| invalid(format!("{SHARED_ACCESS_KEY}: {e}")))?,
        None if get(SHARED_ACCESS_SIGNATURE).is_some() => {
            return Err(invalid(format!(
                "{SHARED_ACCESS_SIGNATURE} is not supported (tokens expire); give {SHARED_ACCESS_KEY}"
            )));
        }
        None if get(X509).is_some() => {
            return Err(invalid(format!(
                "{X509} authentication is not supported; give {SHARED_ACCESS_KEY}"
            )));
        }
        None => return Err(invalid(format!("{SHARED_ACCESS_KEY} is missing"))),
    };
    Ok(Identity::ConnectionString {
        source: variable,
        hostname: hostname.to_owned(),
        device_id: device_id.to_owned(),
        module_id: module_id.map(str::to_owned),
        key_name: key_name.map(str::to_owned),
        key,
        gateway,
        ca_certificate_file,
    })
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host: &str = &self.host;
        match (host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{host}]:{port}"),
            (true, None) => write!(f, "[{host}]"),
            (false, Some(port)) => write!(f, "{host}:{port}"),
            (false, None) => f.write_str(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "YXp1cmVpb3RzZWN1cml0eS10ZXN0LWtleS0zMmJ5dGU=";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn edge_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (WORKLOAD_URI, "unix:///var/run/iotedge/workload.sock"),
            (DEVICE_ID, "dev1"),
            (MODULE_ID, "azureiotsecurity"),
            (GENERATION_ID, "638000000000000000"),
            (IOTHUB_HOSTNAME, "myhub.azure-devices.net"),
            (GATEWAY_HOSTNAME, "edgehost"),
            (API_VERSION, "2022-08-03"),
            (AUTH_SCHEME, "sasToken"),
            ("RuntimeLogLevel", "info"),
        ]
    }

    fn without(pairs: &[(&'static str, &'static str)], name: &str) -> HashMap<String, String> {
        env(&pairs
            .iter()
            .copied()
            .filter(|(k, _)| *k != name)
            .collect::<Vec<_>>())
    }

    fn with(
        pairs: &[(&'static str, &'static str)],
        name: &'static str,
        value: &'static str,
    ) -> HashMap<String, String> {
        let mut map = env(pairs);
        map.insert(name.to_owned(), value.to_owned());
        map
    }

    fn from_cs(cs: &str) -> Result<Option<Identity>, IdentityError> {
        Identity::from_env(&env(&[(EDGEHUB_CONNECTION_STRING, cs)]))
    }

    fn cs_error(reason: &str) -> Result<Option<Identity>, IdentityError> {
        Err(IdentityError::InvalidConnectionString {
            variable: EDGEHUB_CONNECTION_STRING,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn no_environment_means_none() {
        assert_eq!(Identity::from_env(&HashMap::new()), Ok(None));
        assert_eq!(
            Identity::from_env(&env(&[("RuntimeLogLevel", "debug"), ("PATH", "/bin")])),
            Ok(None)
        );
        assert_eq!(
            Identity::from_env(&env(&[(EDGEHUB_CONNECTION_STRING, "  ")])),
            Ok(None)
        );
    }

    #[test]
    fn full_edge_environment() {
        let identity = Identity::from_env(&env(&edge_env())).unwrap().unwrap();
        assert_eq!(
            identity,
            Identity::Edge {
                workload_uri: WorkloadUri::Unix(PathBuf::from("/var/run/iotedge/workload.sock")),
                device_id: "dev1".to_owned(),
                module_id: "azureiotsecurity".to_owned(),
                generation_id: "638000000000000000".to_owned(),
                iothub_hostname: "myhub.azure-devices.net".to_owned(),
                gateway: HostPort {
                    host: "edgehost".to_owned(),
                    port: None
                },
                api_version: "2022-08-03".to_owned(),
            }
        );
        assert_eq!(
            identity.audience(),
            "myhub.azure-devices.net/devices/dev1/modules/azureiotsecurity"
        );
        assert_eq!(identity.device_id(), "dev1");
        assert_eq!(identity.module_id(), Some("azureiotsecurity"));
        assert_eq!(identity.endpoint().to_string(), "edgehost");
        assert_eq!(identity.endpoint().amqps_port(), 5671);
        assert_eq!(identity.token_with_key(1), None);
    }

    #[test]
    fn edge_defaults_and_variants() {
        let identity = Identity::from_env(&without(&edge_env(), API_VERSION))
            .unwrap()
            .unwrap();
        let Identity::Edge { api_version, .. } = &identity else {
            panic!("not edge: {identity:?}");
        };
        assert_eq!(api_version, "2018-06-28");

        let mut pairs = edge_env();
        pairs.push((AUTH_SCHEME, "SASTOKEN"));
        pairs.push((GATEWAY_HOSTNAME, "edgehost.local:15671"));
        pairs.push((WORKLOAD_URI, "http://10.0.0.1:15581/"));
        let identity = Identity::from_env(&env(&pairs)).unwrap().unwrap();
        let Identity::Edge {
            gateway,
            workload_uri,
            ..
        } = &identity
        else {
            panic!("not edge: {identity:?}");
        };
        assert_eq!(
            gateway,
            &HostPort {
                host: "edgehost.local".to_owned(),
                port: Some(15671)
            }
        );
        assert_eq!(gateway.amqps_port(), 15671);
        assert_eq!(
            workload_uri,
            &WorkloadUri::Http {
                host: "10.0.0.1".to_owned(),
                port: 15581
            }
        );
    }

    #[test]
    fn each_missing_edge_variable_is_named() {
        for name in EDGE_VARIABLES {
            assert_eq!(
                Identity::from_env(&without(&edge_env(), name)),
                Err(IdentityError::MissingVariable(name)),
                "{name}"
            );
            assert_eq!(
                Identity::from_env(&with(&edge_env(), name, " ")),
                Err(IdentityError::MissingVariable(name)),
                "{name} blank"
            );
        }
        assert_eq!(
            Identity::from_env(&env(&[(DEVICE_ID, "dev1")]))
                .unwrap_err()
                .to_string(),
            "environment variable IOTEDGE_AUTHSCHEME is missing or empty (the IoT Edge environment needs it)"
        );
    }

    #[test]
    fn invalid_edge_variables_are_named() {
        let err = Identity::from_env(&with(&edge_env(), AUTH_SCHEME, "x509")).unwrap_err();
        assert_eq!(err, IdentityError::UnsupportedAuthScheme("x509".to_owned()));
        assert_eq!(
            err.to_string(),
            "environment variable IOTEDGE_AUTHSCHEME is \"x509\": only \"sasToken\" is supported"
        );
        assert_eq!(
            Identity::from_env(&with(&edge_env(), WORKLOAD_URI, "tcp://x:1"))
                .unwrap_err()
                .to_string(),
            "environment variable IOTEDGE_WORKLOADURI is invalid: unsupported scheme \
             (got \"tcp://x:1\"; expected unix:///path or http://host:port)"
        );
        assert_eq!(
            Identity::from_env(&with(&edge_env(), WORKLOAD_URI, "unix://relative.sock")),
            Err(IdentityError::InvalidVariable {
                variable: WORKLOAD_URI,
                reason: "the socket path must be absolute (got \"unix://relative.sock\"; \
                         expected unix:///path or http://host:port)"
                    .to_owned()
            })
        );
        assert_eq!(
            Identity::from_env(&with(&edge_env(), GATEWAY_HOSTNAME, "edgehost:99999")),
            Err(IdentityError::InvalidVariable {
                variable: GATEWAY_HOSTNAME,
                reason: "port \"99999\" in \"edgehost:99999\" is not a number from 1 to 65535"
                    .to_owned()
            })
        );
        assert_eq!(
            Identity::from_env(&with(&edge_env(), IOTHUB_HOSTNAME, "hub/x")),
            Err(IdentityError::InvalidVariable {
                variable: IOTHUB_HOSTNAME,
                reason: "host name \"hub/x\" contains '/'".to_owned()
            })
        );
    }

    #[test]
    fn host_port_forms() {
        let hp = |h: &str, p: Option<u16>| {
            Ok(HostPort {
                host: h.to_owned(),
                port: p,
            })
        };
        assert_eq!(parse_host_port("edge"), hp("edge", None));
        assert_eq!(parse_host_port("edge:5671"), hp("edge", Some(5671)));
        assert_eq!(parse_host_port("[fe80::1]:443"), hp("fe80::1", Some(443)));
        assert_eq!(parse_host_port("[fe80::1]"), hp("fe80::1", None));
        assert_eq!(parse_host_port("fe80::1"), hp("fe80::1", None));
        assert_eq!(
            parse_host_port("edge:0"),
            Err("port \"0\" in \"edge:0\" is not a number from 1 to 65535".to_owned())
        );
        assert_eq!(
            parse_host_port(":5671"),
            Err("the host name is empty".to_owned())
        );
        assert_eq!(
            parse_host_port("[fe80::1"),
            Err("\"[fe80::1\" has '[' without ']'".to_owned())
        );
        assert_eq!(
            HostPort {
                host: "fe80::1".to_owned(),
                port: Some(443)
            }
            .to_string(),
            "[fe80::1]:443"
        );
        assert_eq!(
            HostPort {
                host: "edge".to_owned(),
                port: Some(443)
            }
            .to_string(),
            "edge:443"
        );
    }

    #[test]
    fn module_connection_string_with_gateway_and_ca() {
        let cs = format!(
            "HostName=myhub.azure-devices.net;DeviceId=dev1;ModuleId=azureiotsecurity;\
             SharedAccessKey={KEY};GatewayHostName=edgehost"
        );
        let identity = Identity::from_env(&env(&[
            (EDGEHUB_CONNECTION_STRING, &cs),
            (CA_CERTIFICATE_FILE, "/certs/ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            identity,
            Identity::ConnectionString {
                source: EDGEHUB_CONNECTION_STRING,
                hostname: "myhub.azure-devices.net".to_owned(),
                device_id: "dev1".to_owned(),
                module_id: Some("azureiotsecurity".to_owned()),
                key_name: None,
                key: SharedAccessKey::from_base64(KEY).unwrap(),
                gateway: Some(HostPort {
                    host: "edgehost".to_owned(),
                    port: None
                }),
                ca_certificate_file: Some(PathBuf::from("/certs/ca.pem")),
            }
        );
        assert_eq!(identity.endpoint().to_string(), "edgehost");
        // Same token as the python vector in sas.rs.
        assert_eq!(
            identity
                .token_with_key(1_700_000_000)
                .unwrap()
                .unwrap()
                .expose(),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity\
             &sig=gHUoN3kurqm4jDW%2FYdyM1rGQyh8wgvpzQmHVyJDH09U%3D&se=1700000000"
        );
    }

    #[test]
    fn connection_string_wins_over_edge_environment() {
        let cs = format!("HostName=h.net;DeviceId=d;SharedAccessKey={KEY}");
        let mut pairs = edge_env();
        pairs.push((IOTHUB_CONNECTION_STRING, &cs));
        let identity = Identity::from_env(&env(&pairs)).unwrap().unwrap();
        let Identity::ConnectionString { source, .. } = &identity else {
            panic!("not a connection string: {identity:?}");
        };
        assert_eq!(*source, IOTHUB_CONNECTION_STRING);
        // A device connection string: device audience, straight to the hub.
        assert_eq!(identity.audience(), "h.net/devices/d");
        assert_eq!(identity.module_id(), None);
        assert_eq!(identity.endpoint().to_string(), "h.net");
    }

    #[test]
    fn connection_string_tolerates_order_spaces_case_and_unknown_keys() {
        let cs = format!(
            " sharedaccesskey = {KEY} ; ModuleId=m ;; Unknown=1;DeviceId=d;\
             HOSTNAME=h.net;SharedAccessKeyName=policy;GatewayHostName=edge:443; "
        );
        let identity = from_cs(&cs).unwrap().unwrap();
        assert_eq!(
            identity,
            Identity::ConnectionString {
                source: EDGEHUB_CONNECTION_STRING,
                hostname: "h.net".to_owned(),
                device_id: "d".to_owned(),
                module_id: Some("m".to_owned()),
                key_name: Some("policy".to_owned()),
                key: SharedAccessKey::from_base64(KEY).unwrap(),
                gateway: Some(HostPort {
                    host: "edge".to_owned(),
                    port: Some(443)
                }),
                ca_certificate_file: None,
            }
        );
        assert_eq!(identity.audience(), "h.net/devices/d/modules/m");
        assert!(
            identity
                .token_with_key(10)
                .unwrap()
                .unwrap()
                .expose()
                .contains("&skn=policy&se=10")
        );
    }

    #[test]
    fn connection_string_errors() {
        let base = "HostName=h.net;DeviceId=d";
        assert_eq!(
            from_cs(&format!("{base};SharedAccessKey={KEY};deviceid=e")),
            cs_error("DeviceId is given more than once")
        );
        assert_eq!(
            from_cs(&format!("DeviceId=d;SharedAccessKey={KEY}")),
            cs_error("HostName is missing")
        );
        assert_eq!(
            from_cs(&format!("HostName=h.net;SharedAccessKey={KEY}")),
            cs_error("DeviceId is missing")
        );
        assert_eq!(from_cs(base), cs_error("SharedAccessKey is missing"));
        assert_eq!(
            from_cs(&format!("{base};ModuleId=;SharedAccessKey={KEY}")),
            cs_error("ModuleId is empty")
        );
        assert_eq!(
            from_cs(&format!("{base};SharedAccessKey")),
            cs_error("segment 3 has no '='")
        );
        assert_eq!(
            from_cs(&format!("{base};=x;SharedAccessKey={KEY}")),
            cs_error("segment 3 has no name")
        );
        assert_eq!(
            from_cs(&format!(
                "{base};SharedAccessSignature=SharedAccessSignature sr=x"
            )),
            cs_error(
                "SharedAccessSignature is not supported (tokens expire); give SharedAccessKey"
            )
        );
        assert_eq!(
            from_cs(&format!("{base};x509=true")),
            cs_error("x509 authentication is not supported; give SharedAccessKey")
        );
        assert_eq!(
            from_cs(&format!("{base};SharedAccessKey={KEY};GatewayHostName=e:x")),
            cs_error("GatewayHostName: port \"x\" in \"e:x\" is not a number from 1 to 65535")
        );
        assert_eq!(
            from_cs(&format!("HostName=h net;DeviceId=d;SharedAccessKey={KEY}")),
            cs_error("HostName: host name \"h net\" contains ' '")
        );
    }

    #[test]
    fn bad_key_error_does_not_echo_the_key() {
        let err = from_cs("HostName=h.net;DeviceId=d;SharedAccessKey=s3cr3t!!").unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection string in EdgeHubConnectionString is invalid: \
             SharedAccessKey: the shared access key is not valid base64"
        );
        let err = from_cs("HostName=h.net;DeviceId=d;s3cr3tkey").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let cs = format!("HostName=h.net;DeviceId=d;SharedAccessKey={KEY}");
        let identity = from_cs(&cs).unwrap().unwrap();
        assert_eq!(
            format!("{identity:?}"),
            "ConnectionString { source: \"EdgeHubConnectionString\", hostname: \"h.net\", \
             device_id: \"d\", module_id: None, key_name: None, key: SharedAccessKey(<redacted>), \
             gateway: None, ca_certificate_file: None }"
        );
    }

    #[test]
    fn process_env_is_a_plain_map() {
        // Only checks the conversion runs; from_env is what the tests above exercise.
        let map = process_env();
        assert_eq!(map.get("\u{0}never set"), None);
    }
}

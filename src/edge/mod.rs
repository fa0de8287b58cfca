//! IoT Edge: the module's identity, its SAS tokens, and the AMQP connection to edgeHub.
//!
//! - [`identity`]: where the identity comes from (the `IOTEDGE_*` environment set by
//!   edgeAgent, or a connection string for local debugging), parsed from a given map.
//! - [`sas`]: shared access signature tokens, built exactly as the Azure IoT SDKs build
//!   them, from a local key or from a digest returned by the workload API's `sign`.
//! - [`workload`]: the IoT Edge workload API client (HTTP over its unix socket).
//! - [`tls`]: rustls client configuration from the trust bundle; no way to skip verification.
//! - [`credentials`]: where tokens and the trust anchor come from, per identity.
//! - [`amqp`]: the AMQP 1.0 connection, CBS put-token and the telemetry sender.

pub mod amqp;
pub mod credentials;
pub mod identity;
pub mod sas;
pub mod tls;
pub mod workload;

//! IoT Edge: the module's identity and its SAS tokens.
//!
//! - [`identity`]: where the identity comes from (the `IOTEDGE_*` environment set by
//!   edgeAgent, or a connection string for local debugging), parsed from a given map.
//! - [`sas`]: shared access signature tokens, built exactly as the Azure IoT SDKs build
//!   them, from a local key or from a digest returned by the workload API's `sign`.
//!
//! Nothing here reads the clock: expiry times come in as arguments.

pub mod identity;
pub mod sas;

//! The ListeningPorts payload (`messageEventSecurityListeningPorts_v1_0.json`): one item per
//! listening TCP socket or bound UDP socket. Addresses are typed, so an item cannot carry
//! text the schema's `ip` format refuses; ports are strings as the schema's `port` type is
//! (`"22"`, and for a remote side that is not connected, `"*"`).

use std::net::IpAddr;

use serde::Serialize;

use super::Details;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListeningPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_address: Option<IpAddr>,
    pub local_port: String,
    /// `TCP` or `UDP` (the schema's examples spell them upper case).
    pub protocol: String,
    #[serde(skip_serializing_if = "Details::is_empty")]
    pub extra_details: Details,
}

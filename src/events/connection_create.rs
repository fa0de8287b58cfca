//! The ConnectionCreate payload (`messageEventSecurityConnectionCreate_v1_0.json`).
//!
//! connect() is an outbound connection (SOCKADDR holds the remote address), accept() and
//! accept4() an inbound one (SOCKADDR holds the *peer* address, although auditd's enrichment
//! labels it `laddr`). The connecting side's local address and port are not in the records.
//! A non-blocking connect returns EINPROGRESS (exit=-115) and is logged as in progress; on
//! this kernel even a non-blocking connect to a closed port does. A refused blocking connect
//! is not a connection and does not match the module's rules.

use serde::Serialize;

use super::ExtraDetails;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectionCreate {
    pub remote_address: String,
    pub remote_port: String,
    pub direction: Direction,
    pub protocol: String,
    pub process_id: i64,
    pub user_id: String,
    pub executable: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    In,
    Out,
}

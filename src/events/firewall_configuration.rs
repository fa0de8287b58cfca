//! The FirewallConfiguration payload (`messageEventSecurityFirewallConfiguration_v1_0.json`):
//! one item per firewall rule. `Enabled` and `Action` are required; what a rule does not
//! match on is left out. Addresses are the schema's `iptag`, free text (`10.0.0.0/8`,
//! `Local subnet`, ranges), so they stay strings; ports likewise (`"22"`, `"1000-2000"`,
//! `"22,53"`, `"*"`).

use serde::Serialize;

use super::Details;
pub use super::connection_create::Direction;

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FirewallRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    pub enabled: bool,
    pub action: FirewallAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Details::is_empty")]
    pub extra_details: Details,
}

/// What a rule does. `Other` (jump, goto, log, reject with a code, …) is said in
/// ExtraDetails, as the schema asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FirewallAction {
    Allow,
    Deny,
    Other,
}

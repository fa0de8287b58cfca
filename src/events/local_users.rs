//! The LocalUsers payload (`messageEventSecurityLocalUsers_v1_0.json`): one item per account
//! of the host's `passwd`. Group ids and names are `;`-separated lists in the same order,
//! the primary group first (the schema's examples: `"0;1"`, `"root;daemon"`).

use serde::Serialize;

use super::Details;

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocalUser {
    pub group_ids: String,
    pub group_names: String,
    pub user_id: String,
    pub user_name: String,
    #[serde(skip_serializing_if = "Details::is_empty")]
    pub extra_details: Details,
}

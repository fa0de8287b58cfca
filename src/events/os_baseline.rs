//! The OSBaseline payload (`messageEventSecurityOSBaseline_v1_0.json`): one item per
//! hardening check. Every field is required; `Error` is the empty string when the check
//! could be decided (the classic agents did the same), and says why when `Result` is `Err`.

use serde::Serialize;

use super::Details;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BaselineCheck {
    pub description: String,
    /// The benchmark's id of the check (e.g. `CIS-debian-12-5.2.10`).
    pub cce_id: String,
    pub result: BaselineResult,
    pub error: String,
    pub severity: BaselineSeverity,
    #[serde(skip_serializing_if = "Details::is_empty")]
    pub extra_details: Details,
}

/// Whether the host passes the check, fails it, or could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BaselineResult {
    Pass,
    Fail,
    Err,
}

/// How bad a failure is, in the schema's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BaselineSeverity {
    Critical,
    Important,
    Warning,
    Informational,
}

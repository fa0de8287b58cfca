//! Operational events: ConfigurationError (Triggered), MessageStatistics and
//! DroppedEventsStatistics (Periodic), with the payloads of
//! `messageOperationalEvent*_v1_0.json`.

use serde::Serialize;

use super::ExtraDetails;

/// A diagnostic event item (`messageEventDiagnostic_v1_0.json`): something the operator
/// should know about the module itself, such as an outbox that had to be moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Diagnostic {
    pub severity: DiagnosticSeverity,
    pub message: String,
    pub process_id: u32,
    pub thread_id: u32,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DiagnosticSeverity {
    Error,
    Warning,
}

/// One configuration problem (`messageOperationalEventConfigurationError_v1_0.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigurationError {
    pub configuration_name: String,
    pub error_type: ConfigurationErrorType,
    pub used_configuration: String,
    pub message: String,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConfigurationErrorType {
    TypeMismatch,
    NotOptimal,
    Conflict,
}

/// Messages of one statistics period (`messageOperationalEventMessageStatistics_v1_0.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageStatistics {
    pub messages_sent: u64,
    #[serde(rename = "MessagesUnder4KB")]
    pub messages_under_4kb: u64,
    pub total_failed: u64,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

/// Events of one queue in one statistics period
/// (`messageOperationalEventDroppedEvents_v1_0.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DroppedEvents {
    pub queue: QueueName,
    pub collected_events: u64,
    pub dropped_events: u64,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
pub enum QueueName {
    High,
    Low,
}

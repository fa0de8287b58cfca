//! The SystemInformation payload (`messageEventSecuritySystemInformation_v1_0.json`): what the
//! host is. Every field is optional in the schema; a field the host root cannot tell (a
//! missing or unreadable file) is left out rather than sent empty or guessed.

use serde::Serialize;

use super::Details;

/// One SystemInformation item (a snapshot has one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SystemInformation {
    #[serde(rename = "OSName", skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    #[serde(rename = "OSVersion", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "OSVendor", skip_serializing_if = "Option::is_none")]
    pub os_vendor: Option<String>,
    /// The schema spells this one `Os…`, unlike its neighbours.
    #[serde(rename = "OsArchitecture", skip_serializing_if = "Option::is_none")]
    pub os_architecture: Option<String>,
    #[serde(rename = "HostName", skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    #[serde(rename = "BIOSVersion", skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    #[serde(rename = "BootDevice", skip_serializing_if = "Option::is_none")]
    pub boot_device: Option<String>,
    #[serde(
        rename = "TotalPhysicalMemoryInKB",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_physical_memory_kb: Option<u64>,
    #[serde(
        rename = "FreePhysicalMemoryInKB",
        skip_serializing_if = "Option::is_none"
    )]
    pub free_physical_memory_kb: Option<u64>,
    #[serde(
        rename = "TotalVirtualMemoryInKB",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_virtual_memory_kb: Option<u64>,
    #[serde(
        rename = "FreeVirtualMemoryInKB",
        skip_serializing_if = "Option::is_none"
    )]
    pub free_virtual_memory_kb: Option<u64>,
    #[serde(rename = "ExtraDetails", skip_serializing_if = "Details::is_empty")]
    pub extra_details: Details,
}

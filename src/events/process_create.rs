//! The ProcessCreate payload (`messageEventSecurityProcessCreate_v1_0.json`).
//!
//! A process is created by a *successful* execve/execveat: a failed exec (a PATH search
//! hitting ENOENT, as pyenv shims do many times per command) has SYSCALL, CWD, PATH and
//! PROCTITLE but no EXECVE record, and is not a process. The command line comes from the
//! EXECVE argv, never from PROCTITLE: the kernel cuts PROCTITLE at 128 bytes and keeps the
//! previous program's title after an in-place exec (`env x`, `sh -c 'exec …'`).

use serde::Serialize;

use super::ExtraDetails;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessCreate {
    pub executable: String,
    pub process_id: i64,
    pub parent_process_id: i64,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub command_line: String,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

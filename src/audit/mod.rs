//! The audit path: read auditd's stream, parse records, coalesce them into events, decode
//! the values the kernel encodes.

pub mod coalesce;
pub mod decode;
pub mod parse;
pub mod source;
pub mod syscalls;
pub mod types;

//! The configuration room: everything the module can be told, and how it is checked.
//!
//! - [`settings`]: defaults < settings file < environment; the ranges `check-config` enforces.
//! - [`agent`]: the agent configuration (the security module twin's settings): parse, apply,
//!   check, and the reported form.
//! - [`duration`]: ISO 8601 durations, as the agent configuration writes them.
//! - [`stages`]: one function per stage building its small config struct.

pub mod agent;
pub mod duration;
pub mod settings;
pub mod stages;
pub mod twin;

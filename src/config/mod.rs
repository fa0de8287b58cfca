//! The configuration room: everything the module can be told, and how it is checked.
//!
//! - [`settings`]: defaults < settings file < environment; the ranges `check-config` enforces.
//! - [`agent`]: the agent configuration (the security module twin's settings): the config in
//!   force, apply, and the reported form; built on `keys` (the table of settings, parsing
//!   one setting) and `layers` (an update parsed, layers resolved per key with the checks
//!   between settings, each value's source), whose public items it re-exports.
//! - [`twin`]: the twin's desired configuration as the top layer, the kept file, the
//!   reported properties, check-config's report.
//! - [`duration`]: ISO 8601 durations, as the agent configuration writes them.
//! - [`stages`]: one function per stage building its small config struct.

pub mod agent;
pub mod duration;
mod keys;
mod layers;
pub mod settings;
pub mod stages;
pub mod twin;

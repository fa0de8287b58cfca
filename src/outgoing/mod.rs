//! The outgoing state: security events in, stored messages out (aggregate → outbox → batch).
//!
//! Contract: [`Outgoing`] takes events, ticks, settlements and new configurations and keeps
//! everything that must reach edgeHub in its store (the durable outbox when sending); it
//! is a synchronous state machine with no clock of its own. Its parts: [`aggregate`]
//! (identical events in a window become one with a hit count), [`state`] (priorities, the
//! store, statistics, the counting that survives a kill) and [`batch`] (the envelope, and
//! pending events into messages by priority, size and time) and [`properties`] (the
//! application properties each message carries). When sending, [`owner`] runs
//! it on a thread of its own, fed by commands: the one owner of the state.

pub mod aggregate;
pub mod batch;
pub mod owner;
pub mod properties;
pub mod state;

pub use state::{
    CHECKPOINT_EVERY_MS, Outgoing, PeriodStats, TotalStats, UpstreamDrops, diagnostic_event,
};

//! Security events: the payloads of `shared/schemas` (the triggered ProcessCreate,
//! ConnectionCreate, Login; the periodic snapshots SystemInformation, LocalUsers,
//! ListeningPorts, FirewallConfiguration, OSBaseline; the operational ones) and the event
//! object that carries them.
//!
//! An event serializes to the schema's event object:
//! `{Id, TimestampLocal, TimestampUTC, Category, Name, EventType, IsEmpty,
//! PayloadSchemaVersion, Payload: [ … ]}`. Security events are always
//! `"Category":"Triggered"` with one payload item, aggregated ones too (the classic agents'
//! `"Aggregated"` is not valid under the published schema). Snapshots are
//! `"Category":"Periodic"`, `"EventType":"Security"`, with one or more items (collected by
//! `crate::collectors`). ExtraDetails values are strings, as the schema's `extradetails`
//! type demands; the snapshots' keys are built at run time (an interface's name), hence
//! [`Details`].

pub mod connection_create;
pub mod derive;
pub mod firewall_configuration;
pub mod kind;
pub mod listening_ports;
pub mod local_users;
pub mod login;
pub mod operational;
pub mod os_baseline;
pub mod process_create;
pub mod system_information;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Local, SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use uuid::Uuid;

pub use connection_create::ConnectionCreate;
pub use derive::{DeriveConfig, DeriveStats, Deriver};
pub use firewall_configuration::{FirewallAction, FirewallRule};
pub use kind::EventKind;
pub use listening_ports::ListeningPort;
pub use local_users::LocalUser;
pub use login::Login;
pub use operational::{ConfigurationError, Diagnostic, DroppedEvents, MessageStatistics};
pub use os_baseline::{BaselineCheck, BaselineResult, BaselineSeverity};
pub use process_create::ProcessCreate;
pub use system_information::SystemInformation;

/// Extra details: a string → string map, serialized in key order.
pub type ExtraDetails = BTreeMap<&'static str, String>;

/// The snapshots' extra details: a string → string map with keys made at run time,
/// serialized in key order.
pub type Details = BTreeMap<String, String>;

/// The payload of an event: one item for the triggered security events, one or more for
/// the snapshots and the operational ones (DroppedEventsStatistics has one item per queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    ProcessCreate(ProcessCreate),
    ConnectionCreate(ConnectionCreate),
    Login(Login),
    SystemInformation(Vec<SystemInformation>),
    LocalUsers(Vec<LocalUser>),
    ListeningPorts(Vec<ListeningPort>),
    FirewallConfiguration(Vec<FirewallRule>),
    OSBaseline(Vec<BaselineCheck>),
    ConfigurationError(Vec<ConfigurationError>),
    MessageStatistics(MessageStatistics),
    DroppedEventsStatistics(Vec<DroppedEvents>),
    Diagnostic(Vec<Diagnostic>),
}

impl Payload {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Payload::ProcessCreate(_) => EventKind::ProcessCreate,
            Payload::ConnectionCreate(_) => EventKind::ConnectionCreate,
            Payload::Login(_) => EventKind::Login,
            Payload::SystemInformation(_) => EventKind::SystemInformation,
            Payload::LocalUsers(_) => EventKind::LocalUsers,
            Payload::ListeningPorts(_) => EventKind::ListeningPorts,
            Payload::FirewallConfiguration(_) => EventKind::FirewallConfiguration,
            Payload::OSBaseline(_) => EventKind::OSBaseline,
            Payload::ConfigurationError(_) => EventKind::ConfigurationError,
            Payload::MessageStatistics(_) => EventKind::MessageStatistics,
            Payload::DroppedEventsStatistics(_) => EventKind::DroppedEventsStatistics,
            Payload::Diagnostic(_) => EventKind::Diagnostic,
        }
    }

    /// The event's `Name`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The event's `EventType`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Payload::ProcessCreate(_)
            | Payload::ConnectionCreate(_)
            | Payload::Login(_)
            | Payload::SystemInformation(_)
            | Payload::LocalUsers(_)
            | Payload::ListeningPorts(_)
            | Payload::FirewallConfiguration(_)
            | Payload::OSBaseline(_) => "Security",
            Payload::Diagnostic(_) => "Diagnostic",
            _ => "Operational",
        }
    }

    /// The event's `Category`: the host snapshots and the statistics are periodic, the rest
    /// is triggered.
    pub fn category(&self) -> &'static str {
        match self {
            Payload::SystemInformation(_)
            | Payload::LocalUsers(_)
            | Payload::ListeningPorts(_)
            | Payload::FirewallConfiguration(_)
            | Payload::OSBaseline(_)
            | Payload::MessageStatistics(_)
            | Payload::DroppedEventsStatistics(_) => "Periodic",
            _ => "Triggered",
        }
    }

    /// The ExtraDetails of a security payload (aggregation adds to them).
    pub fn extra_details_mut(&mut self) -> Option<&mut ExtraDetails> {
        match self {
            Payload::ProcessCreate(p) => Some(&mut p.extra_details),
            Payload::ConnectionCreate(p) => Some(&mut p.extra_details),
            Payload::Login(p) => Some(&mut p.extra_details),
            _ => None,
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::ProcessCreate(p) => [p].serialize(s),
            Payload::ConnectionCreate(p) => [p].serialize(s),
            Payload::Login(p) => [p].serialize(s),
            Payload::SystemInformation(v) => v.serialize(s),
            Payload::LocalUsers(v) => v.serialize(s),
            Payload::ListeningPorts(v) => v.serialize(s),
            Payload::FirewallConfiguration(v) => v.serialize(s),
            Payload::OSBaseline(v) => v.serialize(s),
            Payload::ConfigurationError(v) => v.serialize(s),
            Payload::MessageStatistics(p) => [p].serialize(s),
            Payload::DroppedEventsStatistics(v) => v.serialize(s),
            Payload::Diagnostic(v) => v.serialize(s),
        }
    }
}

/// One security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Deterministic: the same audit record never yields two different Ids.
    pub id: Uuid,
    /// When it happened: the audit record time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub payload: Payload,
}

impl SecurityEvent {
    /// `IsEmpty`: a periodic event with no payload item.
    pub fn is_empty(&self) -> bool {
        match &self.payload {
            Payload::SystemInformation(v) => v.is_empty(),
            Payload::LocalUsers(v) => v.is_empty(),
            Payload::ListeningPorts(v) => v.is_empty(),
            Payload::FirewallConfiguration(v) => v.is_empty(),
            Payload::OSBaseline(v) => v.is_empty(),
            Payload::ConfigurationError(v) => v.is_empty(),
            Payload::DroppedEventsStatistics(v) => v.is_empty(),
            _ => false,
        }
    }
}

/// The namespace of our event Ids (UUIDv5): a fixed random UUID of this project.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_52d4_3c0e_4f57_9a51_8e4b_2d7a_c3e1);

/// A deterministic event Id from the event's identity: node, audit event id, event name and
/// a discriminator (for several security events derived from one audit event).
pub fn event_id(
    node: &[u8],
    audit_id: &crate::audit::parse::EventId,
    name: &str,
    disc: u32,
) -> Uuid {
    let mut key = Vec::with_capacity(node.len() + 64);
    key.extend_from_slice(node);
    key.push(0);
    key.extend_from_slice(audit_id.to_string().as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(disc.to_string().as_bytes());
    Uuid::new_v5(&ID_NAMESPACE, &key)
}

/// RFC 3339 with milliseconds: UTC with `Z`, local with its offset.
pub fn timestamps(time_ms: u64) -> (String, String) {
    let ms = i64::try_from(time_ms).unwrap_or(i64::MAX);
    let utc: DateTime<Utc> = Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let utc_text = utc.to_rfc3339_opts(SecondsFormat::Millis, true);
    (local_text(utc.with_timezone(&Local), &utc_text), utc_text)
}

/// The local time as RFC 3339, or the UTC text when the local date is past the year 9999
/// (the last hours of 9999-12-31 UTC east of Greenwich): a five-digit year is no `date-time`,
/// and `Z` is a valid local offset.
fn local_text<Tz: TimeZone>(local: DateTime<Tz>, utc_text: &str) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if local.year() > 9999 {
        return utc_text.to_owned();
    }
    local.to_rfc3339_opts(SecondsFormat::Millis, false)
}

impl Serialize for SecurityEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (local, utc) = timestamps(self.time_ms);
        let mut m = s.serialize_map(Some(9))?;
        m.serialize_entry("Id", &self.id.hyphenated().to_string())?;
        m.serialize_entry("TimestampLocal", &local)?;
        m.serialize_entry("TimestampUTC", &utc)?;
        m.serialize_entry("Category", self.payload.category())?;
        m.serialize_entry("Name", self.payload.name())?;
        m.serialize_entry("EventType", self.payload.event_type())?;
        m.serialize_entry("IsEmpty", &self.is_empty())?;
        m.serialize_entry("PayloadSchemaVersion", "1.0")?;
        m.serialize_entry("Payload", &self.payload)?;
        m.end()
    }
}

/// Whether text is an IPv4 or IPv6 address (the schema's `ip` type).
pub fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::parse::EventId;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = EventId {
            sec: 1,
            msec: 2,
            serial: 3,
        };
        let b = EventId {
            sec: 1,
            msec: 2,
            serial: 4,
        };
        assert_eq!(event_id(b"", &a, "Login", 0), event_id(b"", &a, "Login", 0));
        assert_ne!(event_id(b"", &a, "Login", 0), event_id(b"", &b, "Login", 0));
        assert_ne!(
            event_id(b"", &a, "Login", 0),
            event_id(b"n", &a, "Login", 0)
        );
        assert_ne!(event_id(b"", &a, "Login", 0), event_id(b"", &a, "Login", 1));
        assert_eq!(event_id(b"", &a, "Login", 0).get_version_num(), 5);
    }

    #[test]
    fn the_last_record_time_stays_a_four_digit_year_in_any_time_zone() {
        let last = crate::audit::parse::MAX_RECORD_SEC * 1000 + 999;
        let (_, utc) = timestamps(last);
        assert_eq!(utc, "9999-12-31T23:59:59.999Z");
        let t = Utc.timestamp_millis_opt(last as i64).unwrap();
        let east = chrono::FixedOffset::east_opt(14 * 3600).unwrap();
        let west = chrono::FixedOffset::west_opt(12 * 3600).unwrap();
        assert_eq!(local_text(t.with_timezone(&east), &utc), utc);
        assert_eq!(
            local_text(t.with_timezone(&west), &utc),
            "9999-12-31T11:59:59.999-12:00"
        );
    }

    #[test]
    fn utc_timestamp_format() {
        let (_, utc) = timestamps(1_700_000_000_123);
        assert_eq!(utc, "2023-11-14T22:13:20.123Z");
    }
}

//! [`EventKind`]: every event the schema names, shared by the events (a payload's kind) and
//! the agent configuration (`eventPriority<Name>`, `aggregation…<Name>`), so neither keys
//! anything by a string name.

use std::fmt;

/// An event of the schema, by its `Name`. The declaration order is the schema's order of the
/// `eventPriority<Name>` settings; [`EventKind::ALL`] lists them in it and
/// [`EventKind::index`] is the position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    ConnectedHardware,
    ListeningPorts,
    ProcessCreate,
    ProcessTerminate,
    SystemInformation,
    LocalUsers,
    Login,
    ConnectionCreate,
    FirewallConfiguration,
    OSBaseline,
    Diagnostic,
    ConfigurationError,
    DroppedEventsStatistics,
    MessageStatistics,
}

impl EventKind {
    /// Every kind, in the schema's order.
    pub const ALL: [EventKind; 14] = {
        use EventKind::*;
        [
            ConnectedHardware,
            ListeningPorts,
            ProcessCreate,
            ProcessTerminate,
            SystemInformation,
            LocalUsers,
            Login,
            ConnectionCreate,
            FirewallConfiguration,
            OSBaseline,
            Diagnostic,
            ConfigurationError,
            DroppedEventsStatistics,
            MessageStatistics,
        ]
    };

    /// The event's `Name` as the schema spells it.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ConnectedHardware => "ConnectedHardware",
            EventKind::ListeningPorts => "ListeningPorts",
            EventKind::ProcessCreate => "ProcessCreate",
            EventKind::ProcessTerminate => "ProcessTerminate",
            EventKind::SystemInformation => "SystemInformation",
            EventKind::LocalUsers => "LocalUsers",
            EventKind::Login => "Login",
            EventKind::ConnectionCreate => "ConnectionCreate",
            EventKind::FirewallConfiguration => "FirewallConfiguration",
            EventKind::OSBaseline => "OSBaseline",
            EventKind::Diagnostic => "Diagnostic",
            EventKind::ConfigurationError => "ConfigurationError",
            EventKind::DroppedEventsStatistics => "DroppedEventsStatistics",
            EventKind::MessageStatistics => "MessageStatistics",
        }
    }

    /// The kind named `name` (exact case, as events carry it).
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The position in [`EventKind::ALL`] (for tables indexed by kind).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_names_round_trip() {
        for (i, k) in EventKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i, "{k}");
            assert_eq!(EventKind::from_name(k.name()), Some(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(EventKind::from_name("login"), None);
        assert_eq!(EventKind::from_name("Process"), None);
        assert_eq!(EventKind::Login.name(), "Login");
        assert_eq!(EventKind::OSBaseline.name(), "OSBaseline");
    }

    /// Each kind names an event message schema of `shared/schemas` (read at test time):
    /// `messageEvent<Type><Name>_v1_0.json`, the operational statistics named by their
    /// files (`…DroppedEvents…` for DroppedEventsStatistics, `…MessageStatistics…`).
    #[test]
    fn every_kind_has_its_schema_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/schemas/");
        let files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for k in EventKind::ALL {
            let stem = match k {
                EventKind::DroppedEventsStatistics => "DroppedEvents",
                other => other.name(),
            };
            let found = files
                .iter()
                .filter(|f| {
                    f.starts_with("messageEvent") || f.starts_with("messageOperationalEvent")
                })
                .any(|f| f.ends_with(&format!("{stem}_v1_0.json")));
            assert!(found, "{k}: no schema file in {files:?}");
        }
    }
}

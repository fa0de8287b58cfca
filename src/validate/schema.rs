//! The rules of the published schemas (`shared/schemas`) as tables: the envelope
//! ([`ENVELOPE`]), the event ([`EVENT`], exactly these keys) and the 14 typed events
//! ([`TYPED`]). `super::check` walks a message against them.

/// What a value must be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ty {
    /// Ports and user ids are strings too.
    Str,
    /// Any size, negative too.
    Int,
    Bool,
    /// The schema's `guid`: a string of exactly 36 characters (a length, not a format).
    Guid,
    /// The schema's `datetime`: a string in RFC 3339 date-time format ([`super::formats`]).
    DateTime,
    /// The schema's `ip`: an IPv4 or an IPv6 address ([`super::formats`]).
    Ip,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// The schema's `extradetails`: an object of strings.
    Details,
}

pub(super) const CATEGORIES: &[&str] = &["Periodic", "Triggered"];
pub(super) const EVENT_TYPES: &[&str] = &["Security", "Operational", "Diagnostic"];
pub(super) const DIRECTIONS: &[&str] = &["In", "Out"];

pub(super) const ENVELOPE: &[(&str, Ty)] = &[
    ("AgentVersion", Ty::Str),
    ("AgentId", Ty::Guid),
    ("MessageSchemaVersion", Ty::OneOf(&["1.0"])),
    // "Events" is checked by hand: an array of events.
];
pub(super) const ENVELOPE_KEYS: &[&str] =
    &["AgentVersion", "AgentId", "MessageSchemaVersion", "Events"];

pub(super) const EVENT: &[(&str, Ty)] = &[
    ("Id", Ty::Guid),
    ("TimestampLocal", Ty::DateTime),
    ("TimestampUTC", Ty::DateTime),
    ("Category", Ty::OneOf(CATEGORIES)),
    ("Name", Ty::Str),
    ("EventType", Ty::OneOf(EVENT_TYPES)),
    ("IsEmpty", Ty::Bool),
    ("PayloadSchemaVersion", Ty::Str),
    // "Payload" is checked by hand: an array, its items by the typed schema.
];
pub(super) const EVENT_KEYS: &[&str] = &[
    "Id",
    "TimestampLocal",
    "TimestampUTC",
    "Category",
    "Name",
    "EventType",
    "IsEmpty",
    "PayloadSchemaVersion",
    "Payload",
];

/// One of the typed event schemas: what it fixes in the event (`Category`, `EventType`;
/// `PayloadSchemaVersion` is `"1.0"` in all) and the shape of its payload items (these keys
/// and no others). Its `"IsEmpty": {"boolean": ["false"]}` is not a JSON Schema keyword and
/// constrains nothing.
pub(super) struct TypedEvent {
    pub(super) name: &'static str,
    pub(super) category: &'static str,
    pub(super) event_type: &'static str,
    pub(super) fields: &'static [(&'static str, Ty)],
    pub(super) required: &'static [&'static str],
    /// At least one of these keys (Login's `anyOf`: UserId or UserName).
    pub(super) one_of: &'static [&'static str],
}

pub(super) const D: (&str, Ty) = ("ExtraDetails", Ty::Details);

pub(super) const TYPED: &[TypedEvent] = &[
    TypedEvent {
        name: "ConnectionCreate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalAddress", Ty::Ip),
            ("LocalPort", Ty::Str),
            ("Direction", Ty::OneOf(DIRECTIONS)),
            ("Protocol", Ty::Str),
            ("ProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("Executable", Ty::Str),
            ("CommandLine", Ty::Str),
            D,
        ],
        required: &[
            "RemoteAddress",
            "RemotePort",
            "Direction",
            "Protocol",
            "ProcessId",
            "Executable",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "Login",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("ProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            ("Operation", Ty::Str),
            ("Executable", Ty::Str),
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalPort", Ty::Str),
            ("Result", Ty::OneOf(&["Fail", "Success"])),
            D,
        ],
        required: &["ProcessId", "Operation", "Executable", "Result"],
        one_of: &["UserId", "UserName"],
    },
    TypedEvent {
        name: "ProcessCreate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("Executable", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ParentProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            ("CommandLine", Ty::Str),
            D,
        ],
        required: &[
            "Executable",
            "ProcessId",
            "ParentProcessId",
            "UserId",
            "CommandLine",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "ProcessTerminate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("Executable", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ExitStatus", Ty::Int),
            D,
        ],
        required: &["Executable", "ProcessId", "ExitStatus"],
        one_of: &[],
    },
    TypedEvent {
        name: "ListeningPorts",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalAddress", Ty::Ip),
            ("LocalPort", Ty::Str),
            ("Protocol", Ty::Str),
            D,
        ],
        required: &["LocalPort", "Protocol"],
        one_of: &[],
    },
    TypedEvent {
        name: "FirewallConfiguration",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("Priority", Ty::Int),
            ("Direction", Ty::OneOf(DIRECTIONS)),
            ("ChainName", Ty::Str),
            ("Application", Ty::Str),
            ("Enabled", Ty::Bool),
            ("Action", Ty::OneOf(&["Allow", "Deny", "Other"])),
            // Addresses here are the schema's `iptag`: any string ("Local subnet", ranges).
            ("SourceAddress", Ty::Str),
            ("SourcePort", Ty::Str),
            ("DestinationAddress", Ty::Str),
            ("DestinationPort", Ty::Str),
            ("Protocol", Ty::Str),
            D,
        ],
        required: &["Enabled", "Action"],
        one_of: &[],
    },
    TypedEvent {
        name: "LocalUsers",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("GroupIds", Ty::Str),
            ("GroupNames", Ty::Str),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            D,
        ],
        required: &["GroupIds", "GroupNames", "UserId", "UserName"],
        one_of: &[],
    },
    TypedEvent {
        name: "ConnectedHardware",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("HardwareCategory", Ty::Str),
            ("HardwareSubCategory", Ty::Str),
            ("HardwareName", Ty::Str),
            D,
        ],
        required: &["HardwareCategory", "HardwareSubCategory", "HardwareName"],
        one_of: &[],
    },
    TypedEvent {
        name: "OSBaseline",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("Description", Ty::Str),
            ("CceId", Ty::Str),
            ("Result", Ty::OneOf(&["Pass", "Fail", "Err"])),
            ("Error", Ty::Str),
            (
                "Severity",
                Ty::OneOf(&["Critical", "Important", "Warning", "Informational"]),
            ),
            D,
        ],
        required: &["Description", "CceId", "Result", "Error", "Severity"],
        one_of: &[],
    },
    TypedEvent {
        name: "SystemInformation",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("OSName", Ty::Str),
            ("OSVersion", Ty::Str),
            ("OSVendor", Ty::Str),
            ("OsArchitecture", Ty::Str),
            ("HostName", Ty::Str),
            ("BIOSVersion", Ty::Str),
            ("BootDevice", Ty::Str),
            ("TotalPhysicalMemoryInKB", Ty::Int),
            ("FreePhysicalMemoryInKB", Ty::Int),
            ("TotalVirtualMemoryInKB", Ty::Int),
            ("FreeVirtualMemoryInKB", Ty::Int),
            D,
        ],
        required: &[],
        one_of: &[],
    },
    TypedEvent {
        name: "Diagnostic",
        category: "Triggered",
        event_type: "Diagnostic",
        fields: &[
            ("CorrelationId", Ty::Guid),
            (
                "Severity",
                Ty::OneOf(&["Fatal", "Error", "Warning", "Information", "Debug"]),
            ),
            ("Message", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ThreadId", Ty::Int),
            D,
        ],
        required: &["Severity", "Message", "ProcessId", "ThreadId"],
        one_of: &[],
    },
    TypedEvent {
        name: "ConfigurationError",
        category: "Triggered",
        event_type: "Operational",
        fields: &[
            ("ConfigurationName", Ty::Str),
            (
                "ErrorType",
                Ty::OneOf(&["TypeMismatch", "NotOptimal", "Conflict"]),
            ),
            ("UsedConfiguration", Ty::Str),
            ("Message", Ty::Str),
            D,
        ],
        required: &[
            "ConfigurationName",
            "ErrorType",
            "UsedConfiguration",
            "Message",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "DroppedEventsStatistics",
        category: "Periodic",
        event_type: "Operational",
        fields: &[
            ("Queue", Ty::OneOf(&["High", "Low"])),
            ("CollectedEvents", Ty::Int),
            ("DroppedEvents", Ty::Int),
            D,
        ],
        required: &["Queue", "CollectedEvents", "DroppedEvents"],
        one_of: &[],
    },
    TypedEvent {
        name: "MessageStatistics",
        category: "Periodic",
        event_type: "Operational",
        fields: &[
            ("MessagesSent", Ty::Int),
            ("MessagesUnder4KB", Ty::Int),
            ("TotalFailed", Ty::Int),
            D,
        ],
        required: &["MessagesSent", "MessagesUnder4KB", "TotalFailed"],
        one_of: &[],
    },
];

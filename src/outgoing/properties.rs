//! The AMQP application properties of a security message, as the classic C# agent sends
//! them (its `MessageBuilder` and `IotHubClient`), so that edgeHub routes can filter on them
//! (`WHERE MessagePriority = 'High'`).
//!
//! Contract: every message carries `MessagePriority` = `High` when it holds at least one event
//! of the High queue, `Low` otherwise (the C# agent names the queue that led the message,
//! and sends a full message as `High` even without a high-priority event in it: here the
//! property says what the message holds), then `HubResourceId` = the twin's
//! `hubResourceId` when the configuration has one that is not empty (the C# agent sends it
//! even empty). Both are string keys with string values. They are taken from the
//! configuration in force when the message is handed to the sender, not when it was built.
//! [`bytes()`] is what they may cost on the wire, the `iothub-outputname` property the
//! telemetry link adds for `edgehub.output_name` included: the batcher keeps it out of each
//! body, so body plus properties stay within the message size.

use crate::config::agent::AgentConfig;
use crate::edge::amqp::telemetry::OUTPUT_NAME_KEY;

/// The property naming the message's priority.
pub const MESSAGE_PRIORITY: &str = "MessagePriority";
/// The property carrying the twin's `hubResourceId`.
pub const HUB_RESOURCE_ID: &str = "HubResourceId";

/// Bytes of the application-properties section besides its pairs, at most: the section's
/// descriptor (3 bytes, AMQP 1.0 §3.2.5: 0x00, smallulong 0x53, 0x74) and a `map32` header
/// (constructor, size and count: 9 bytes). A smaller encoding only makes it less.
pub const SECTION_OVERHEAD: usize = 12;
/// Bytes each pair costs besides the text of its key and value, at most: a `str32`
/// constructor and length (5 bytes) for each of the two strings.
pub const PAIR_OVERHEAD: usize = 10;

/// The properties of a message that holds high-priority events (`high`) or not, under
/// `config`, in the order they are sent.
pub fn of(config: &AgentConfig, high: bool) -> Vec<(String, String)> {
    let priority = if high { "High" } else { "Low" };
    let mut v = vec![(MESSAGE_PRIORITY.to_owned(), priority.to_owned())];
    if let Some(id) = config
        .hub_resource_id
        .as_deref()
        .filter(|id| !id.is_empty())
    {
        v.push((HUB_RESOURCE_ID.to_owned(), id.to_owned()));
    }
    v
}

/// The most the properties of any message under `config` sent to module output `output`
/// (`edgehub.output_name`; None: no output) cost on the wire (the longer priority value,
/// `High`, and the `iothub-outputname` pair the telemetry link appends,
/// [`crate::edge::amqp::telemetry::security_message_to`]): what the size cap keeps out of
/// each body. IoT Hub counts the names and values of application properties in a message's
/// size; the encoding bytes are counted too, so this is an upper bound whatever edgeHub
/// measures.
pub fn bytes(config: &AgentConfig, output: Option<&str>) -> usize {
    let output = output.map(|o| (OUTPUT_NAME_KEY.to_owned(), o.to_owned()));
    SECTION_OVERHEAD
        + of(config, true)
            .iter()
            .chain(&output)
            .map(|(k, v)| k.len() + v.len() + PAIR_OVERHEAD)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_says_whether_a_high_event_is_in_and_the_resource_id_follows_when_set() {
        let mut c = AgentConfig::default();
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(of(&c, true), [p("MessagePriority", "High")]);
        assert_eq!(of(&c, false), [p("MessagePriority", "Low")]);
        // An empty id is not sent.
        c.hub_resource_id = Some(String::new());
        assert_eq!(of(&c, false), [p("MessagePriority", "Low")]);
        let id = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub";
        c.hub_resource_id = Some(id.to_owned());
        assert_eq!(
            of(&c, true),
            [p("MessagePriority", "High"), p("HubResourceId", id)]
        );
    }

    /// The cost: the section once, each pair's key, value and encoding; the longer value
    /// (`High`) counts.
    #[test]
    fn the_bytes_count_keys_values_and_their_encoding() {
        let mut c = AgentConfig::default();
        assert_eq!(
            bytes(&c, None),
            12 + "MessagePriority".len() + "High".len() + 10
        );
        assert_eq!(bytes(&c, None), 41);
        c.hub_resource_id = Some("x".repeat(100));
        assert_eq!(bytes(&c, None), 41 + "HubResourceId".len() + 100 + 10);
        assert_eq!(
            bytes(&c, Some("security")),
            bytes(&c, None) + "iothub-outputname".len() + "security".len() + 10
        );
    }

    /// On the wire: a message whose body is exactly at the cap (message size minus
    /// [`bytes`]) with the longest output name a route can hold (128 bytes) and a hub
    /// resource id, encoded as the telemetry link sends it, has body plus
    /// application-properties section within `maxMessageSizeInBytes`. Without the output name
    /// counted, the section is 155 bytes more than the cap allowed for.
    #[test]
    fn a_message_at_the_cap_with_a_long_output_name_stays_within_the_size_on_the_wire() {
        use crate::edge::amqp::Outbound;
        use crate::edge::amqp::telemetry::security_message_to;
        use fe2o3_amqp::types::messaging::Message;

        let c = AgentConfig {
            max_message_size_in_bytes: 4_096,
            hub_resource_id: Some(
                "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub"
                    .into(),
            ),
            ..AgentConfig::default()
        };
        // The longest name `edgehub.output_name` takes (the settings' output_name_ok).
        let output = "o".repeat(128);
        let cap = 4_096 - bytes(&c, Some(&output));
        let m = Outbound {
            message_id: "00000000-0000-0000-0000-000000000001".into(),
            body: "x".repeat(cap),
            high_events: 1,
            low_events: 0,
            application_properties: of(&c, true),
        };
        let msg: Message<_> =
            security_message_to(&m, "/devices/d/modules/m/messages/events", Some(&output));
        let section = msg.application_properties.expect("properties");
        let wire = serde_amqp::to_vec(&section).expect("encode the section");
        assert!(
            m.body.len() + wire.len() <= 4_096,
            "body {} + properties {} > 4096",
            m.body.len(),
            wire.len()
        );
        // The output name's pair is on the wire, and is what a cap without it would miss.
        let without = 4_096 - bytes(&c, None);
        assert!(
            without + wire.len() > 4_096,
            "the output name's {} bytes are what the cap must reserve",
            wire.len()
        );
    }
}

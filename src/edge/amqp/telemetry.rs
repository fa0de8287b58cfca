//! The telemetry link and its messages: what edgeHub needs to route a security message, and
//! what each settlement means for the message in the store.
//!
//! - Address `/devices/{device}/modules/{module}/messages/events` (`/devices/{device}/messages/events`
//!   for a device identity), ids percent-encoded as the SDKs do; edgeHub matches on the path
//!   and url-decodes the ids, which must match the identity of the CBS token.
//! - Each message: a unique, stable message-id (the store's, so a retry carries the same id),
//!   content-type `application/json`, content-encoding `utf-8`, the body in one `data`
//!   section, and the security marker: message annotation `iothub-interface-id` whose key is
//!   an AMQP **symbol** and whose value is an AMQP **string** (edgeHub looks the key up as a
//!   symbol and reads the value `as string`; anything else is dropped silently, and the
//!   message is then not a security message upstream).
//! - Settlement: Accepted is done. Rejected is final (edgeHub rejects what it can never take,
//!   e.g. a message over 256 KiB), so it is counted as failed and never retried. Released and
//!   Modified mean "not now": the message stays in the store and is sent again.

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    Data, Message, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};

use super::Outbound;
use crate::edge::sas::encode_component;

/// The message annotation that marks a security message.
pub const INTERFACE_ID_KEY: &str = "iothub-interface-id";
/// Its value for Defender for IoT.
pub const SECURITY_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";
pub const CONTENT_TYPE: &str = "application/json";
pub const CONTENT_ENCODING: &str = "utf-8";
/// The link property naming the client, as the SDKs send it.
pub const CLIENT_VERSION_PROPERTY: &str = "com.microsoft:client-version";

/// The telemetry sender link's target address.
pub fn events_address(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!(
            "/devices/{}/modules/{}/messages/events",
            encode_component(device_id),
            encode_component(m)
        ),
        None => format!("/devices/{}/messages/events", encode_component(device_id)),
    }
}

/// The `com.microsoft:client-version` value.
pub fn client_version() -> String {
    format!("azureiotsecurity/{}", env!("CARGO_PKG_VERSION"))
}

/// The message-id as the Node SDK puts it on the wire: a UUID string becomes an AMQP
/// `uuid` (its `encodeUuid`), anything else stays a string. edgeHub reads either with
/// `MessageId.ToString()`, which gives the same text back.
pub fn message_id(id: &str) -> MessageId {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => MessageId::Uuid(fe2o3_amqp::types::primitives::Uuid::from(u.into_bytes())),
        Err(_) => MessageId::String(id.to_owned()),
    }
}

/// The AMQP message for a stored security message. `to` is the link's address, as the Node
/// SDK sets it on every telemetry message.
pub fn security_message(m: &Outbound, to: &str) -> Message<Data> {
    let annotations = MessageAnnotations::builder()
        .insert(
            OwnedKey::Symbol(Symbol::from(INTERFACE_ID_KEY)),
            Value::String(SECURITY_INTERFACE_ID.into()),
        )
        .build();
    let properties = Properties {
        message_id: Some(message_id(&m.message_id)),
        to: Some(to.to_owned()),
        content_type: Some(Symbol::from(CONTENT_TYPE)),
        content_encoding: Some(Symbol::from(CONTENT_ENCODING)),
        ..Default::default()
    };
    Message::builder()
        .properties(properties)
        .message_annotations(annotations)
        .data(Binary::from(m.body.as_bytes().to_vec()))
        .build()
}

/// What a settlement means for the stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Accepted: remove it, count it as sent.
    Delivered,
    /// Rejected: final; remove it, count it as failed, log the reason.
    Rejected {
        condition: String,
        description: String,
    },
    /// Released or Modified: keep it and send it again.
    Retry { outcome: &'static str },
}

pub fn settlement(outcome: &Outcome) -> Settlement {
    match outcome {
        Outcome::Accepted(_) => Settlement::Delivered,
        Outcome::Rejected(r) => {
            let (condition, description) = match &r.error {
                Some(e) => (
                    format!("{:?}", e.condition),
                    e.description.clone().unwrap_or_default(),
                ),
                None => ("(none)".to_owned(), String::new()),
            };
            Settlement::Rejected {
                condition,
                description,
            }
        }
        Outcome::Released(_) => Settlement::Retry {
            outcome: "released",
        },
        Outcome::Modified(_) => Settlement::Retry {
            outcome: "modified",
        },
        #[allow(unreachable_patterns)]
        _ => Settlement::Retry {
            outcome: "unexpected",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError, Error};
    use fe2o3_amqp::types::messaging::{Accepted, Modified, Rejected, Released};

    fn stored() -> Outbound {
        Outbound {
            message_id: "3f1c-1".into(),
            body: r#"{"AgentId":"x"}"#.into(),
            high_events: 1,
            low_events: 0,
        }
    }

    #[test]
    fn addresses_encode_ids_like_the_sdks() {
        assert_eq!(
            events_address("dev 1", Some("azureiotsecurity")),
            "/devices/dev%201/modules/azureiotsecurity/messages/events"
        );
        assert_eq!(events_address("d", None), "/devices/d/messages/events");
    }

    #[test]
    fn security_marker_is_a_symbol_key_with_a_string_value() {
        let m = security_message(&stored(), "/devices/d/modules/m/messages/events");
        let ann = m.message_annotations.as_ref().unwrap();
        assert_eq!(ann.0.len(), 1);
        let (k, v) = ann.0.iter().next().unwrap();
        assert_eq!(k, &OwnedKey::Symbol(Symbol::from("iothub-interface-id")));
        assert_eq!(
            v,
            &Value::String("urn:azureiot:Security:SecurityAgent:1".into())
        );
        let p = m.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(MessageId::String("3f1c-1".into())));
        assert_eq!(
            p.to.as_deref(),
            Some("/devices/d/modules/m/messages/events")
        );
        assert_eq!(p.content_type, Some(Symbol::from("application/json")));
        assert_eq!(p.content_encoding, Some(Symbol::from("utf-8")));
        assert_eq!(m.body.0.as_slice(), br#"{"AgentId":"x"}"#);
        assert!(m.application_properties.is_none());
    }

    #[test]
    fn uuid_message_ids_go_as_amqp_uuids_like_the_node_sdk() {
        let id = "6f1e4a3c-8f00-5b6a-9c1d-2e3f4a5b6c7d";
        match message_id(id) {
            MessageId::Uuid(u) => {
                assert_eq!(uuid::Uuid::from_bytes(*u.as_inner()).to_string(), id)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(message_id("m-1"), MessageId::String("m-1".into()));
    }

    #[test]
    fn outcomes_map_to_what_the_store_does() {
        assert_eq!(
            settlement(&Outcome::Accepted(Accepted {})),
            Settlement::Delivered
        );
        assert_eq!(
            settlement(&Outcome::Released(Released {})),
            Settlement::Retry {
                outcome: "released"
            }
        );
        assert_eq!(
            settlement(&Outcome::Modified(Modified {
                delivery_failed: Some(true),
                undeliverable_here: None,
                message_annotations: None
            })),
            Settlement::Retry {
                outcome: "modified"
            }
        );
        let rejected = Outcome::Rejected(Rejected {
            error: Some(Error::new(
                AmqpError::NotAllowed,
                Some("message too large".to_owned()),
                None,
            )),
        });
        match settlement(&rejected) {
            Settlement::Rejected {
                condition,
                description,
            } => {
                assert!(condition.contains("NotAllowed"), "{condition}");
                assert_eq!(description, "message too large");
            }
            other => panic!("{other:?}"),
        }
    }
}

//! The telemetry sender: a link service that takes security messages from the [`Outbox`],
//! one at a time, oldest first, and tells it how edgeHub settled each.
//!
//! Contract: a message leaves the outbox only when edgeHub accepts it (delivered) or rejects
//! it (final, counted as failed). Released, Modified, a send timeout or a lost connection
//! leave it where it is, so the retry is a re-read of the same message with the same
//! message-id. (The Node SDK reports a Released message as sent and loses it.)

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Message, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::{DetachError, LinkStateError, SendError, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{
    AmqpError as Condition, Error as LinkError, ErrorCondition, SenderSettleMode,
};
use tokio::sync::{Notify, watch};

use super::connection::{
    Attached, BoxFuture, LinkContext, LinkService, attach_sender, link_properties,
};
use super::{AmqpConfig, AmqpError, AmqpStats, Control, Outbound, Outbox, Settled};
use crate::edge::sas::encode_component;

/// The message annotation that marks a security message.
pub const INTERFACE_ID_KEY: &str = "iothub-interface-id";
/// Its value for Defender for IoT.
pub const SECURITY_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";
pub const CONTENT_TYPE: &str = "application/json";
pub const CONTENT_ENCODING: &str = "utf-8";
/// The link property naming the client, as the SDKs send it.
pub const CLIENT_VERSION_PROPERTY: &str = "com.microsoft:client-version";

/// The telemetry sender link's target address: `/devices/{device}/modules/{module}/messages/events`
/// (`/devices/{device}/messages/events` for a device identity), ids percent-encoded as the SDKs
/// do; edgeHub matches on the path and url-decodes the ids, which must match the identity of
/// the CBS token.
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
/// SDK sets it on every telemetry message. A unique, stable message-id (the store's, so a
/// retry carries the same id), content-type `application/json`, content-encoding `utf-8`, the
/// body in one `data` section, the security marker, and the message's application
/// properties (none: no section).
pub fn security_message(m: &Outbound, to: &str) -> Message<Data> {
    security_message_to(m, to, None)
}

/// The property naming the module output a message is sent to: the SDKs' `sendOutputEvent`
/// (Node `azure-iot-device` ModuleClient) sets it as an application property on the telemetry
/// link, and edgeHub routes the message as `/messages/modules/<m>/outputs/<name>`.
pub const OUTPUT_NAME_KEY: &str = "iothub-outputname";

/// [`security_message`] sent to the module output `output` (the application property
/// [`OUTPUT_NAME_KEY`], after the message's own properties); None: as [`security_message`].
pub fn security_message_to(m: &Outbound, to: &str, output: Option<&str>) -> Message<Data> {
    // The marker's key must be an AMQP **symbol** and its value an AMQP **string**: edgeHub
    // looks the key up as a symbol and reads the value `as string`; anything else is dropped
    // silently, and the message is then not a security message upstream.
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
    // Keys are AMQP strings (the section's map is string-keyed) and values AMQP strings, as
    // the Node SDK's `message.properties.add(k, v)` sends a string value (compared on the
    // wire by tests/edgehub_interop.rs); edgeHub hands them on as the message's properties.
    let output = output.map(|o| (OUTPUT_NAME_KEY.to_owned(), o.to_owned()));
    let pairs: Vec<&(String, String)> = m.application_properties.iter().chain(&output).collect();
    let application_properties = (!pairs.is_empty()).then(|| {
        let mut b = ApplicationProperties::builder();
        for (k, v) in pairs {
            b = b.insert(k.clone(), SimpleValue::String(v.clone()));
        }
        b.build()
    });
    Message::builder()
        .properties(properties)
        .message_annotations(annotations)
        .application_properties(application_properties)
        .data(Binary::from(m.body.as_bytes().to_vec()))
        .build()
}

/// What a settlement means for the stored message. Rejected is final (edgeHub rejects what
/// it can never take, e.g. a message over 256 KiB); Released and Modified mean "not now".
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

/// The telemetry sender as a link service: attached on every connection, it sends what the
/// outbox holds and reports each settlement back to it.
pub struct Telemetry<O: Outbox> {
    outbox: Arc<O>,
    /// Notified when a message may be waiting (the sender also looks every second).
    wake: Arc<Notify>,
    stats: Arc<AmqpStats>,
    send_timeout: Duration,
    retry_delay: Duration,
    /// `iothub-outputname` of every message ([`AmqpConfig::output_name`]).
    output_name: Option<String>,
}

impl<O: Outbox> Telemetry<O> {
    pub fn new(
        outbox: Arc<O>,
        wake: Arc<Notify>,
        stats: Arc<AmqpStats>,
        config: &AmqpConfig,
    ) -> Self {
        Telemetry {
            outbox,
            wake,
            stats,
            send_timeout: config.send_timeout,
            retry_delay: config.retry_delay,
            output_name: config.output_name.clone(),
        }
    }

    /// Send until finishing with nothing left (`Ok`, the link closed) or a failure.
    async fn send_loop(
        &self,
        mut events: Sender,
        address: &str,
        mut control: watch::Receiver<Control>,
    ) -> Result<(), AmqpError> {
        loop {
            let finishing = matches!(*control.borrow(), Control::Finish { .. });
            let Some(m) = self.outbox.next().await? else {
                if finishing {
                    // A clean goodbye; errors here change nothing.
                    let _ = events.close().await;
                    return Ok(());
                }
                // While idle, watch the link too: edgeHub refuses a bad token by detaching
                // the link right after the attach, and closes links when it shuts down.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = control.changed() => {}
                    e = events.on_detach() => return Err(detached(e)),
                }
                continue;
            };
            let msg = security_message_to(&m, address, self.output_name.as_deref());
            let outcome = match tokio::time::timeout(self.send_timeout, events.send(msg)).await {
                Err(_) => {
                    AmqpStats::add(&self.stats.send_timeouts, 1);
                    return Err(AmqpError::Timeout {
                        what: "waiting for edgeHub to settle a message",
                        after: self.send_timeout,
                    });
                }
                Ok(Err(e)) => return Err(send_failed(e)),
                Ok(Ok(o)) => o,
            };
            match settlement(&outcome) {
                Settlement::Delivered => {
                    let (message_id, bytes) = (m.message_id.clone(), m.body.len());
                    self.outbox.settled(m, Settled::Delivered).await?;
                    AmqpStats::add(&self.stats.delivered, 1);
                    AmqpStats::add(&self.stats.delivered_bytes, bytes as u64);
                    tracing::debug!(%message_id, bytes, "message delivered");
                }
                Settlement::Rejected {
                    condition,
                    description,
                } => {
                    tracing::warn!(
                        error_id = "E-EDGEHUB-REJECTED",
                        message_id = %m.message_id,
                        %condition,
                        %description,
                        high_events = m.high_events,
                        low_events = m.low_events,
                        "edgeHub rejected a message: it is dropped and counted as failed"
                    );
                    self.outbox.settled(m, Settled::Rejected).await?;
                    AmqpStats::add(&self.stats.rejected, 1);
                }
                Settlement::Retry { outcome } => {
                    AmqpStats::add(&self.stats.released, 1);
                    tracing::info!(message_id = %m.message_id, outcome, "edgeHub did not take a message now; it will be sent again");
                    tokio::select! {
                        _ = tokio::time::sleep(self.retry_delay) => {}
                        _ = control.changed() => {}
                    }
                }
            }
        }
    }
}

impl<O: Outbox> LinkService for Telemetry<O> {
    fn attach<'s, 'a>(
        &'s self,
        session: &'a mut SessionHandle<()>,
        cx: &'a LinkContext,
    ) -> BoxFuture<'a, Result<Attached<'s>, AmqpError>>
    where
        's: 'a,
    {
        Box::pin(async move {
            let address = events_address(&cx.device_id, cx.module_id.as_deref());
            // The first link that needs the token: a refused attach is (usually) a refused
            // token.
            let events = attach_sender(
                session,
                format!("TelemetrySenderLink-{}", cx.link_id),
                address.clone(),
                SenderSettleMode::Unsettled,
                link_properties(),
                cx.attach_timeout,
            )
            .await
            .map_err(|e| match e {
                AmqpError::Attach { reason, .. } => AmqpError::Unauthorized { reason },
                other => other,
            })?;
            let control = cx.control.clone();
            let to = address.clone();
            Ok(Attached {
                address,
                run: Box::pin(async move { self.send_loop(events, &to, control).await }),
            })
        })
    }

    fn has_work(&self) -> BoxFuture<'_, bool> {
        // An outbox that cannot answer counts as holding something: try to send it.
        Box::pin(async { !matches!(self.outbox.next().await, Ok(None)) })
    }
}

/// The telemetry link was detached by edgeHub. `amqp:unauthorized-access` is edgeHub's answer
/// to a token it does not accept.
fn detached(e: DetachError) -> AmqpError {
    match e {
        DetachError::RemoteDetachedWithError(err) => link_error(err),
        other => AmqpError::Detached(other.to_string()),
    }
}

/// A send failed: a link closed with an error is told like a detach.
fn send_failed(e: SendError) -> AmqpError {
    match e {
        SendError::Detached(e) => detached(e),
        SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(err)
            | LinkStateError::RemoteDetachedWithError(err),
        ) => link_error(err),
        other => AmqpError::Send(other.to_string()),
    }
}

fn link_error(err: LinkError) -> AmqpError {
    let description = err.description.unwrap_or_default();
    if err.condition == ErrorCondition::AmqpError(Condition::UnauthorizedAccess) {
        AmqpError::Unauthorized {
            reason: description,
        }
    } else {
        AmqpError::Detached(format!("{:?}: {description}", err.condition))
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
            application_properties: Vec::new(),
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

    /// The message's properties become the application-properties section, in their order,
    /// string keys with string values.
    #[test]
    fn application_properties_are_string_pairs_in_their_order() {
        let mut m = stored();
        m.application_properties = vec![
            ("MessagePriority".into(), "High".into()),
            ("HubResourceId".into(), "/subscriptions/s/x".into()),
        ];
        let msg = security_message(&m, "/devices/d/messages/events");
        let props = msg.application_properties.as_ref().unwrap();
        let pairs: Vec<(&str, &SimpleValue)> =
            props.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            pairs,
            [
                ("MessagePriority", &SimpleValue::String("High".into())),
                (
                    "HubResourceId",
                    &SimpleValue::String("/subscriptions/s/x".into())
                ),
            ]
        );
    }

    /// With an output name, `iothub-outputname` follows the message's own properties (a
    /// string key and value); a message without properties gets the section for it alone.
    #[test]
    fn an_output_name_is_the_last_application_property() {
        let mut m = stored();
        m.application_properties = vec![("MessagePriority".into(), "Low".into())];
        let msg = security_message_to(&m, "/devices/d/messages/events", Some("security"));
        let props = msg.application_properties.as_ref().unwrap();
        let pairs: Vec<(&str, &SimpleValue)> =
            props.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            pairs,
            [
                ("MessagePriority", &SimpleValue::String("Low".into())),
                ("iothub-outputname", &SimpleValue::String("security".into())),
            ]
        );
        let bare = security_message_to(&stored(), "/devices/d/messages/events", Some("o1"));
        let props = bare.application_properties.as_ref().unwrap();
        assert_eq!(props.0.len(), 1);
        assert_eq!(
            props.0.get("iothub-outputname"),
            Some(&SimpleValue::String("o1".into()))
        );
        assert!(
            security_message_to(&stored(), "/devices/d/messages/events", None)
                .application_properties
                .is_none()
        );
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

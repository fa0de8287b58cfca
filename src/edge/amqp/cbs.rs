//! Claims-based security (CBS): the put-token request and its reply, as the SDKs format them
//! (facts and sources: shared/reference/iotedge-amqp.md §3.4). The request goes through the
//! [`request`](super::request) helper (a sender and a receiver on `$cbs`, the reply matched by
//! correlation-id = our message-id); this file keeps only the format.
//!
//! The SDKs open the connection without credentials (no SASL, or ANONYMOUS) and prove who
//! they are with this request instead. edgeHub does not check the token here: it caches it
//! and checks it when a link attaches, so a bad token shows up as a refused attach.

use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};

pub use super::request::message_id_text;

/// The CBS node's address.
pub const CBS_ADDRESS: &str = "$cbs";
/// The token type the C and Node SDKs send (edgeHub also takes `azure-devices.net:sastoken`).
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// Where the Node SDK asks the reply to go.
pub const REPLY_TO: &str = "cbs";

/// What a put-token reply said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbsReply {
    pub correlation_id: Option<String>,
    pub status: i32,
    pub description: Option<String>,
}

impl CbsReply {
    /// 200 (edgeHub) and 202 (Azure.Amqp) both mean the token was taken.
    pub fn is_success(&self) -> bool {
        matches!(self.status, 200 | 202)
    }
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CbsReplyError {
    #[error("the put-token reply has no status-code")]
    NoStatus,
    #[error("the put-token reply's status-code is not an int: {0}")]
    StatusNotInt(String),
}

/// The put-token request: an amqp-value **string** body holding the whole
/// `SharedAccessSignature …` token, string application properties `operation` = `put-token`,
/// `type` and `name` = `audience`. The request helper gives it its message-id.
pub fn put_token_request(token: String, audience: &str) -> Message<Body<Value>> {
    let props = ApplicationProperties::builder()
        .insert("operation", SimpleValue::String("put-token".into()))
        .insert("type", SimpleValue::String(SAS_TOKEN_TYPE.into()))
        .insert("name", SimpleValue::String(audience.into()))
        .build();
    let properties = Properties {
        reply_to: Some(REPLY_TO.into()),
        ..Default::default()
    };
    Message::builder()
        .properties(properties)
        .application_properties(props)
        .body(Body::Value(AmqpValue(Value::String(token))))
        .build()
}

/// Read a reply (any body). Status: edgeHub answers 200 (`AmqpResponseStatusCode.OK`),
/// Azure.Amqp's own CBS node 202 (Accepted); the `fe2o3-amqp-cbs` crate only takes 202, which
/// is why this module builds the request itself and takes both.
pub fn parse_reply(msg: &Message<Body<Value>>) -> Result<CbsReply, CbsReplyError> {
    let correlation_id = super::request::correlation_id(msg);
    let props = msg.application_properties.as_ref();
    let get = |key: &str| props.and_then(|p| p.0.get(key));
    let status = match get("status-code") {
        None => return Err(CbsReplyError::NoStatus),
        Some(SimpleValue::Int(i)) => *i,
        // Be liberal in the width: some peers send a long or a ushort.
        Some(SimpleValue::Long(i)) => {
            i32::try_from(*i).map_err(|_| CbsReplyError::StatusNotInt(i.to_string()))?
        }
        Some(SimpleValue::Uint(i)) => {
            i32::try_from(*i).map_err(|_| CbsReplyError::StatusNotInt(i.to_string()))?
        }
        Some(SimpleValue::Short(i)) => i32::from(*i),
        Some(SimpleValue::Ushort(i)) => i32::from(*i),
        Some(other) => return Err(CbsReplyError::StatusNotInt(format!("{other:?}"))),
    };
    let description = match get("status-description") {
        Some(SimpleValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(CbsReply {
        correlation_id,
        status,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::MessageId;

    fn reply(props: Vec<(&str, SimpleValue)>, corr: Option<MessageId>) -> Message<Body<Value>> {
        let mut b = ApplicationProperties::builder();
        for (k, v) in props {
            b = b.insert(k, v);
        }
        Message::builder()
            .properties(Properties {
                correlation_id: corr,
                ..Default::default()
            })
            .application_properties(b.build())
            .body(Body::Value(AmqpValue(Value::Null)))
            .build()
    }

    #[test]
    fn request_has_the_sdk_shape() {
        let m = put_token_request("SharedAccessSignature sr=x".into(), "hub/devices/d");
        let p = m.application_properties.as_ref().unwrap();
        assert_eq!(
            p.0.get("operation"),
            Some(&SimpleValue::String("put-token".into()))
        );
        assert_eq!(
            p.0.get("type"),
            Some(&SimpleValue::String(
                "servicebus.windows.net:sastoken".into()
            ))
        );
        assert_eq!(
            p.0.get("name"),
            Some(&SimpleValue::String("hub/devices/d".into()))
        );
        let props = m.properties.as_ref().unwrap();
        assert_eq!(props.message_id, None, "the request helper sets it");
        assert_eq!(props.reply_to.as_deref(), Some("cbs"));
        assert_eq!(
            m.body,
            Body::Value(AmqpValue(Value::String(
                "SharedAccessSignature sr=x".into()
            )))
        );
    }

    /// The request as the helper sends it (message-id set) encodes byte for byte as the
    /// `Message<AmqpValue<String>>` put-token sent before the helper existed.
    #[test]
    fn request_bytes_are_the_typed_string_bodys() {
        use fe2o3_amqp::types::messaging::message::__private::Serializable;
        let mut m = put_token_request("SharedAccessSignature sr=x".into(), "hub/devices/d");
        m.properties.as_mut().unwrap().message_id = Some(MessageId::String("m-1".into()));
        let before: Message<AmqpValue<String>> = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::String("m-1".into())),
                reply_to: Some("cbs".into()),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", SimpleValue::String("put-token".into()))
                    .insert(
                        "type",
                        SimpleValue::String("servicebus.windows.net:sastoken".into()),
                    )
                    .insert("name", SimpleValue::String("hub/devices/d".into()))
                    .build(),
            )
            .value("SharedAccessSignature sr=x".to_string())
            .build();
        let now = serde_amqp::to_vec(&Serializable(m)).unwrap();
        let then = serde_amqp::to_vec(&Serializable(before)).unwrap();
        assert_eq!(now, then);
        assert!(now.len() > 100, "{} bytes", now.len());
    }

    #[test]
    fn edgehub_200_and_azure_amqp_202_are_success_others_not() {
        for (status, ok) in [
            (200, true),
            (202, true),
            (400, false),
            (401, false),
            (500, false),
        ] {
            let r = parse_reply(&reply(
                vec![
                    ("status-code", SimpleValue::Int(status)),
                    ("status-description", SimpleValue::String("OK".into())),
                ],
                Some(MessageId::String("m-1".into())),
            ))
            .unwrap();
            assert_eq!(r.status, status);
            assert_eq!(r.is_success(), ok, "status {status}");
            assert_eq!(r.correlation_id.as_deref(), Some("m-1"));
            assert_eq!(r.description.as_deref(), Some("OK"));
        }
    }

    #[test]
    fn replies_without_a_usable_status_are_errors() {
        assert_eq!(
            parse_reply(&reply(vec![], None)),
            Err(CbsReplyError::NoStatus)
        );
        assert!(matches!(
            parse_reply(&reply(
                vec![("status-code", SimpleValue::String("200".into()))],
                None
            )),
            Err(CbsReplyError::StatusNotInt(_))
        ));
        let r = parse_reply(&reply(
            vec![("status-code", SimpleValue::Long(202))],
            Some(MessageId::Ulong(7)),
        ))
        .unwrap();
        assert_eq!((r.status, r.correlation_id.as_deref()), (202, Some("7")));
    }
}

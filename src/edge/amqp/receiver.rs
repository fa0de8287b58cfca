//! A receiver for unsolicited messages (an echo module's input, the twin's patches): a link
//! service with one receiver link on an address.
//!
//! Contract: each message is handed to the caller as an [`Inbound`], which the caller accepts,
//! rejects or releases; one dropped undecided is released, so edgeHub offers it again. At most
//! `credit` messages are outstanding: credit is given back as the caller settles them. A
//! decision reaches edgeHub only on the connection the message came on; after a reconnect
//! edgeHub offers the message again.

use std::time::Duration;

use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{
    AmqpError as Condition, Error as LinkError, ReceiverSettleMode,
};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::mpsc;

use super::AmqpError;
use super::connection::{
    Attached, BoxFuture, LinkContext, LinkService, finish_requested, link_properties, within,
};
use super::request::AmqpMessage;

/// Where and how the receiver attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverSpec {
    /// The link is named `{name}-{link id}`.
    pub name: String,
    /// The link's source.
    pub address: String,
    /// How many messages may be outstanding (delivered, not yet settled); at least 1.
    pub credit: u32,
}

/// What the caller decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    /// Final: edgeHub does not offer it again. The text goes with `amqp:not-allowed`.
    Reject(String),
    /// Not now: edgeHub offers it again.
    Release,
}

type Decision = (DeliveryInfo, Disposition);

/// A message received, waiting for the caller's decision.
#[derive(Debug)]
pub struct Inbound {
    pub message: AmqpMessage,
    decider: Decider<DeliveryInfo>,
}

impl Inbound {
    pub fn accept(mut self) {
        self.decider.decide(Disposition::Accept);
    }

    pub fn reject(mut self, description: impl Into<String>) {
        self.decider.decide(Disposition::Reject(description.into()));
    }

    pub fn release(mut self) {
        self.decider.decide(Disposition::Release);
    }
}

/// Sends one decision for the delivery `T` to the link (pure plumbing, generic for its tests):
/// the first decision counts, none at all is a release.
#[derive(Debug)]
struct Decider<T> {
    settle: Option<(T, mpsc::UnboundedSender<(T, Disposition)>)>,
}

impl<T> Decider<T> {
    fn decide(&mut self, how: Disposition) {
        if let Some((delivery, tx)) = self.settle.take() {
            // The link is gone (the connection ended): edgeHub offers the message again.
            let _ = tx.send((delivery, how));
        }
    }
}

impl<T> Drop for Decider<T> {
    fn drop(&mut self) {
        self.decide(Disposition::Release);
    }
}

/// The receiver as a link service.
pub struct ReceiverService {
    spec: ReceiverSpec,
    deliveries: mpsc::Sender<Inbound>,
}

/// A receiver service and the channel its messages come out of.
pub fn service(spec: ReceiverSpec) -> (ReceiverService, mpsc::Receiver<Inbound>) {
    let credit = spec.credit.max(1);
    let (deliveries, rx) = mpsc::channel(credit as usize);
    let spec = ReceiverSpec { credit, ..spec };
    (ReceiverService { spec, deliveries }, rx)
}

impl ReceiverService {
    async fn attach_link<R>(
        &self,
        session: &mut SessionHandle<R>,
        cx: &LinkContext,
    ) -> Result<Receiver, AmqpError> {
        within(cx.attach_timeout, "attach receiver", async {
            Receiver::builder()
                .name(format!("{}-{}", self.spec.name, cx.link_id))
                .source(self.spec.address.clone())
                .receiver_settle_mode(ReceiverSettleMode::First)
                .auto_accept(false)
                // Credit comes back as dispositions are sent, so what is outstanding stays
                // within it.
                .credit_mode(CreditMode::Auto(self.spec.credit))
                .properties(link_properties())
                .attach(session)
                .await
                .map_err(|e| AmqpError::Attach {
                    address: self.spec.address.clone(),
                    reason: e.to_string(),
                })
        })
        .await
    }

    fn failed(&self, reason: String) -> AmqpError {
        AmqpError::Link {
            address: self.spec.address.clone(),
            reason,
        }
    }

    async fn receive(
        &self,
        mut link: Receiver,
        control: tokio::sync::watch::Receiver<super::Control>,
    ) -> Result<(), AmqpError> {
        let (settle, mut decisions) = mpsc::unbounded_channel::<Decision>();
        let finish = finish_requested(control);
        tokio::pin!(finish);
        loop {
            tokio::select! {
                _ = &mut finish => break,
                Some((info, how)) = decisions.recv() => {
                    dispose(&link, info, how).await.map_err(|e| self.failed(e))?;
                }
                d = link.recv::<Body<Value>>() => {
                    let (info, message) = d.map_err(|e| self.failed(e.to_string()))?.into_parts();
                    let inbound = Inbound { message, decider: Decider { settle: Some((info, settle.clone())) } };
                    if self.deliveries.send(inbound).await.is_err() {
                        // Nobody takes them any more: the message was released (dropped
                        // undecided); stop receiving rather than be offered it again.
                        tracing::debug!(address = %self.spec.address, "the receiver's caller is gone; closing the link");
                        break;
                    }
                }
            }
        }
        // Decisions already made still go out before the link closes.
        while let Ok((info, how)) = decisions.try_recv() {
            let _ = dispose(&link, info, how).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), link.close()).await;
        Ok(())
    }
}

async fn dispose(link: &Receiver, info: DeliveryInfo, how: Disposition) -> Result<(), String> {
    let r = match how {
        Disposition::Accept => link.accept(info).await,
        Disposition::Reject(text) => {
            link.reject(
                info,
                LinkError::new(Condition::NotAllowed, Some(text), None),
            )
            .await
        }
        Disposition::Release => link.release(info).await,
    };
    r.map_err(|e| e.to_string())
}

impl LinkService for ReceiverService {
    fn attach<'s, 'a>(
        &'s self,
        session: &'a mut SessionHandle<()>,
        cx: &'a LinkContext,
    ) -> BoxFuture<'a, Result<Attached<'s>, AmqpError>>
    where
        's: 'a,
    {
        Box::pin(async move {
            let link = self.attach_link(session, cx).await?;
            let control = cx.control.clone();
            Ok(Attached {
                address: self.spec.address.clone(),
                run: Box::pin(self.receive(link, control)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_decision_goes_out_once_and_an_undecided_message_is_released() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let decider = |n: u32| Decider {
            settle: Some((n, tx.clone())),
        };
        let mut d = decider(1);
        d.decide(Disposition::Accept);
        d.decide(Disposition::Reject("too late".into()));
        drop(d);
        decider(2).decide(Disposition::Reject("no route".into()));
        decider(3).decide(Disposition::Release);
        drop(decider(4));
        let got: Vec<(u32, Disposition)> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                (1, Disposition::Accept),
                (2, Disposition::Reject("no route".into())),
                (3, Disposition::Release),
                (4, Disposition::Release)
            ]
        );
    }

    #[test]
    fn credit_is_at_least_one() {
        let (s, _rx) = service(ReceiverSpec {
            name: "in".into(),
            address: "a".into(),
            credit: 0,
        });
        assert_eq!(s.spec.credit, 1);
    }
}

//! The outgoing state on a thread of its own: the one owner of [`Outgoing`] when sending.
//!
//! Contract: [`spawn`] moves an [`Outgoing`] onto a std thread (its SQLite writes and their
//! fsync stay off the async workers) that serves [`Command`]s from one bounded channel, in
//! order. The pipeline feeds it through a [`Feeder`] (events, ticks, the final flush); the
//! AMQP sender reads and settles messages through an [`OwnerHandle`], which implements
//! `edge::amqp::Outbox` (each call answered by the thread on a oneshot). The thread
//! announces a ready message on the sender's `Notify` and publishes its counters after each
//! command ([`Counts`]); nothing else holds the state, and no lock is shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{Outgoing, TotalStats, UpstreamDrops};
use crate::config::agent::AgentConfig;
use crate::edge::amqp::{Outbound, Outbox, OutboxError, Settled};
use crate::events::SecurityEvent;
use crate::outbox::{StoreError, StoredMessage};
use crate::stats::Snapshot;

/// Commands the owner thread can hold before the pipeline waits: each carries the events of
/// one pass of the pipeline loop (one chunk of lines), so this is passes, not events. Small:
/// the byte-bounded line queue before the pipeline is where a backlog waits.
pub const CAPACITY: usize = 16;

/// What the owner thread is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Security events from the pipeline.
    Events {
        events: Vec<SecurityEvent>,
        now_ms: u64,
    },
    /// One operational event of another task (a ConfigurationError of the twin), answered
    /// once it is committed.
    Push {
        ev: Box<SecurityEvent>,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Time passes: windows, statistics and messages that are due.
    Tick {
        now_ms: u64,
        wall_ms: u64,
        upstream: UpstreamDrops,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The oldest message waiting, with its application properties under the configuration
    /// in force now.
    Next {
        reply: oneshot::Sender<Result<Option<Outbound>, StoreError>>,
    },
    /// edgeHub settled a message for good.
    Settled {
        message: StoredMessage,
        how: Settled,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A new agent configuration (the twin's, next).
    Config { config: AgentConfig, now_ms: u64 },
    /// Every window and pending event into messages.
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The stop: what is pending into messages, the last statistics period, and again (so
    /// that the last statistics count what the first flush sent).
    Finish {
        wall_ms: u64,
        upstream: UpstreamDrops,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// End the thread (after the sender's grace).
    Shutdown,
    /// `debug.panic_task = "owner"`: the thread panics (test knob).
    Fail,
}

/// The outgoing state's counters, as the thread last published them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub totals: TotalStats,
    pub queued_messages: usize,
    pub queued_bytes: usize,
}

impl Counts {
    /// The outgoing state's part of the counters snapshot: totals since start and what the
    /// store holds.
    pub fn fill(&self, s: &mut Snapshot) {
        let t = &self.totals;
        s.messages_sent = t.messages_sent;
        s.bytes_sent = t.bytes_sent;
        s.chunks_sent = t.chunks_sent;
        s.messages_failed = t.messages_failed;
        s.dropped_high = t.dropped_high;
        s.dropped_low = t.dropped_low;
        s.configured_out = t.configured_out;
        s.queued_messages = self.queued_messages as u64;
        s.queued_bytes = self.queued_bytes as u64;
    }
}

/// The sender's side: cheap to clone, answers through the thread.
#[derive(Debug, Clone)]
pub struct OwnerHandle {
    tx: mpsc::Sender<Command>,
    counts: watch::Receiver<Counts>,
}

/// The pipeline's side: sends, and when the channel is full waits and counts the wait.
#[derive(Debug)]
pub struct Feeder {
    handle: OwnerHandle,
    /// The reply to the last tick, until it came: one tick at a time is in the channel.
    tick: Option<oneshot::Receiver<Result<(), StoreError>>>,
    waits: Arc<AtomicU64>,
}

/// A running owner thread.
#[derive(Debug)]
pub struct Owner {
    pub handle: OwnerHandle,
    pub feeder: Feeder,
    /// Ends when the thread ends: with its panic when it panicked (see [`supervise`]).
    pub ended: oneshot::Receiver<std::thread::Result<()>>,
}

fn stopped() -> StoreError {
    StoreError::Backend("the outgoing thread has stopped".into())
}

/// Start the owner thread with `outgoing`; `ready` is notified when a message is ready.
pub fn spawn(outgoing: Outgoing, ready: Arc<Notify>) -> std::io::Result<Owner> {
    spawn_with_capacity(outgoing, ready, CAPACITY)
}

/// [`spawn`] with a channel of `capacity` commands.
pub fn spawn_with_capacity(
    outgoing: Outgoing,
    ready: Arc<Notify>,
    capacity: usize,
) -> std::io::Result<Owner> {
    let (tx, rx) = mpsc::channel(capacity);
    let (counts_tx, counts) = watch::channel(outgoing.counts());
    let (ended_tx, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name("outgoing".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve(outgoing, rx, &ready, &counts_tx)
            }));
            let _ = ended_tx.send(r);
        })?;
    let handle = OwnerHandle { tx, counts };
    Ok(Owner {
        feeder: Feeder {
            handle: handle.clone(),
            tick: None,
            waits: Arc::new(AtomicU64::new(0)),
        },
        handle,
        ended,
    })
}

/// The thread's end as a task's end, for `app::Supervised`: a panic of the thread is the
/// task's panic (same text), a return is the task's return.
pub async fn supervise(ended: oneshot::Receiver<std::thread::Result<()>>) {
    match ended.await {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The thread always sends before it ends; without it, it is gone all the same.
        Err(_) => {}
    }
}

fn serve(
    mut o: Outgoing,
    mut rx: mpsc::Receiver<Command>,
    ready: &Notify,
    counts: &watch::Sender<Counts>,
) {
    // The counters are published before a reply goes, so that whoever got the reply reads
    // counters that include its command. A reply nobody waits for any more (the caller gave
    // up) is not an error here.
    let publish = |o: &Outgoing| {
        counts.send_replace(o.counts());
    };
    // After a command that can build messages: wake the sender when one is waiting.
    let announce = |o: &Outgoing| {
        if matches!(o.next_message(), Ok(Some(_))) {
            ready.notify_one();
        }
    };
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Events { events, now_ms } => {
                for ev in events {
                    o.push(ev, now_ms);
                }
                publish(&o);
            }
            Command::Push { ev, now_ms, reply } => {
                let r = o.push_committed(*ev, now_ms);
                publish(&o);
                let _ = reply.send(r);
            }
            Command::Tick {
                now_ms,
                wall_ms,
                upstream,
                reply,
            } => {
                let r = o.tick(now_ms, wall_ms, upstream);
                publish(&o);
                let _ = reply.send(r);
                announce(&o);
            }
            Command::Next { reply } => {
                let _ = reply.send(o.next_message().map(|m| {
                    m.map(|m| Outbound {
                        application_properties: o.application_properties(&m),
                        message_id: m.message_id,
                        body: m.body,
                        high_events: m.high_events,
                        low_events: m.low_events,
                    })
                }));
            }
            Command::Settled {
                message,
                how,
                reply,
            } => {
                let r = match how {
                    Settled::Delivered => o.sent(&message),
                    Settled::Rejected => o.rejected(&message),
                };
                publish(&o);
                let _ = reply.send(r);
            }
            Command::Config { config, now_ms } => {
                o.set_config(config, now_ms);
                publish(&o);
            }
            Command::Flush { reply } => {
                let r = o.flush();
                publish(&o);
                let _ = reply.send(r);
                announce(&o);
            }
            Command::Finish {
                wall_ms,
                upstream,
                reply,
            } => {
                let r = o.flush().and_then(|()| {
                    o.snapshot(wall_ms, upstream);
                    o.flush()
                });
                publish(&o);
                let _ = reply.send(r);
                announce(&o);
            }
            Command::Shutdown => return,
            Command::Fail => panic!("debug.panic_task: the owner task was made to fail"),
        }
    }
}

impl OwnerHandle {
    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(cmd(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// The oldest message waiting, with its application properties.
    pub async fn next_message(&self) -> Result<Option<Outbound>, StoreError> {
        self.ask(|reply| Command::Next { reply }).await?
    }

    /// edgeHub settled `message` for good.
    pub async fn settle(&self, message: StoredMessage, how: Settled) -> Result<(), StoreError> {
        self.ask(|reply| Command::Settled {
            message,
            how,
            reply,
        })
        .await?
    }

    /// One operational event from another task than the pipeline (the twin's
    /// ConfigurationError): into the outgoing state as the pipeline's events go (priority,
    /// aggregation, the store), answered once committed, so that the caller knows it is kept.
    pub async fn push(&self, ev: SecurityEvent, now_ms: u64) -> Result<(), StoreError> {
        self.ask(|reply| Command::Push {
            ev: Box::new(ev),
            now_ms,
            reply,
        })
        .await?
    }

    /// A new agent configuration.
    pub async fn set_config(&self, config: AgentConfig, now_ms: u64) -> Result<(), StoreError> {
        let cmd = Command::Config { config, now_ms };
        self.tx.send(cmd).await.map_err(|_| stopped())
    }

    /// Every window and pending event into messages.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.ask(|reply| Command::Flush { reply }).await?
    }

    /// End the thread; what it holds is committed already (each command commits).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }

    /// Make the thread panic (`debug.panic_task = "owner"`).
    pub async fn fail(&self) {
        let _ = self.tx.send(Command::Fail).await;
    }

    /// The counters the thread last published.
    pub fn counts(&self) -> Counts {
        self.counts.borrow().clone()
    }
}

impl Outbox for OwnerHandle {
    async fn next(&self) -> Result<Option<Outbound>, OutboxError> {
        self.next_message().await.map_err(outbox_error)
    }

    /// The properties go with the message (the store keeps none).
    async fn settled(&self, m: Outbound, how: Settled) -> Result<(), OutboxError> {
        let stored = StoredMessage {
            message_id: m.message_id,
            body: m.body,
            high_events: m.high_events,
            low_events: m.low_events,
        };
        self.settle(stored, how).await.map_err(outbox_error)
    }
}

fn outbox_error(e: StoreError) -> OutboxError {
    OutboxError(e.to_string())
}

impl Feeder {
    /// Send, or when the channel is full, count the wait and wait: the pipeline then stops
    /// draining the line queue, whose drops the socket reader counts (never a silent loss).
    async fn send(&self, cmd: Command) -> Result<(), StoreError> {
        match self.handle.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.handle.tx.send(cmd).await.map_err(|_| stopped())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
        }
    }

    /// Security events of one pass of the pipeline.
    pub async fn events(&self, events: Vec<SecurityEvent>, now_ms: u64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.send(Command::Events { events, now_ms }).await
    }

    /// Time passes. The previous tick's failure is returned here (the pipeline does not wait
    /// for the store's commit); while the previous tick is not answered yet, this one is
    /// left out (the next one does its work).
    pub async fn tick(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        upstream: UpstreamDrops,
    ) -> Result<(), StoreError> {
        if let Some(answer) = &mut self.tick {
            match answer.try_recv() {
                Ok(r) => {
                    self.tick = None;
                    r?;
                }
                Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                Err(oneshot::error::TryRecvError::Closed) => return Err(stopped()),
            }
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Tick {
            now_ms,
            wall_ms,
            upstream,
            reply,
        })
        .await?;
        self.tick = Some(answer);
        Ok(())
    }

    /// The stop: flush, the last statistics, flush; answered when committed.
    pub async fn finish(
        &mut self,
        wall_ms: u64,
        upstream: UpstreamDrops,
    ) -> Result<(), StoreError> {
        if let Some(answer) = self.tick.take() {
            answer.await.map_err(|_| stopped())??;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Finish {
            wall_ms,
            upstream,
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// How many times the pipeline waited for room in the channel.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Commands waiting for the thread now.
    pub fn backlog(&self) -> usize {
        let tx = &self.handle.tx;
        tx.max_capacity().saturating_sub(tx.capacity())
    }

    pub fn handle(&self) -> &OwnerHandle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;
    use crate::events::operational::QueueName;
    use crate::outbox::{Dropped, MemoryStore, Pending, Store};
    use crate::outgoing::state::tests::{events_of, outgoing_with, process};

    const LIMIT: Duration = Duration::from_secs(10);

    /// A memory store whose commit can be held (each commit waits for a release while a
    /// gate is set) and whose acknowledgements can fail: test-only faults.
    struct Faulty {
        inner: MemoryStore,
        gate: Option<std_mpsc::Receiver<()>>,
        /// Told each time a commit starts.
        entered: Option<std_mpsc::Sender<()>>,
        fail_ack: bool,
    }

    impl Store for Faulty {
        fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
            self.inner.add_pending(ev)
        }
        fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
            self.inner.pending_sizes(q)
        }
        fn pending_statistics(&self) -> usize {
            self.inner.pending_statistics()
        }
        fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
            self.inner.set_max_bytes(max_bytes)
        }
        fn pending_bytes(&self, q: QueueName) -> usize {
            self.inner.pending_bytes(q)
        }
        fn requeue(&mut self, name: &str, to: QueueName) -> Result<u64, StoreError> {
            self.inner.requeue(name, to)
        }
        fn build_message(
            &mut self,
            message_id: &str,
            first: QueueName,
            high: usize,
            low: usize,
            build: &mut dyn FnMut(&[&str]) -> String,
        ) -> Result<bool, StoreError> {
            self.inner
                .build_message(message_id, first, high, low, build)
        }
        fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
            self.inner.next_message()
        }
        fn ack(&mut self, message_id: &str) -> Result<(), StoreError> {
            if self.fail_ack {
                return Err(StoreError::Backend("disk I/O error".into()));
            }
            self.inner.ack(message_id)
        }
        fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
            self.inner.reject(message_id)
        }
        fn message_count(&self) -> usize {
            self.inner.message_count()
        }
        fn bytes(&self) -> usize {
            self.inner.bytes()
        }
        fn commit(&mut self) -> Result<(), StoreError> {
            if let Some(entered) = &self.entered {
                let _ = entered.send(());
            }
            if let Some(gate) = &self.gate {
                gate.recv_timeout(LIMIT)
                    .map_err(|_| StoreError::Backend("the test never released".into()))?;
            }
            Ok(())
        }
    }

    fn faulty(fail_ack: bool) -> Box<Faulty> {
        Box::new(Faulty {
            inner: MemoryStore::new(1 << 20),
            gate: None,
            entered: None,
            fail_ack,
        })
    }

    fn memory() -> Outgoing {
        outgoing_with(1 << 20, Box::new(MemoryStore::new(1 << 20)))
    }

    async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, f)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
    }

    fn pids(m: &StoredMessage) -> Vec<i64> {
        events_of(m)
            .iter()
            .map(|e| e["Payload"][0]["ProcessId"].as_i64().unwrap())
            .collect()
    }

    /// Events and a tick in; the message they make comes out of `next`, its settlement is
    /// counted in the published counters, and then nothing is left; `ready` was announced.
    #[tokio::test]
    async fn commands_go_in_and_replies_and_counts_come_out() {
        let ready = Arc::new(Notify::new());
        let mut owner = spawn(memory(), ready.clone()).unwrap();
        let f = &mut owner.feeder;
        f.events(vec![process(1), process(2)], 0).await.unwrap();
        f.tick(1_000, 1_000, UpstreamDrops::default())
            .await
            .unwrap();
        within("ready", ready.notified()).await;
        let h = owner.handle.clone();
        let m = within("next", h.next()).await.unwrap().unwrap();
        let stored = StoredMessage {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            high_events: m.high_events,
            low_events: m.low_events,
        };
        assert_eq!(pids(&stored), vec![1001, 1002]);
        assert_eq!((m.high_events, m.low_events), (0, 2));
        assert_eq!(
            m.application_properties,
            [("MessagePriority".to_owned(), "Low".to_owned())]
        );
        within("settled", h.settled(m.clone(), Settled::Delivered))
            .await
            .unwrap();
        assert_eq!(within("next", h.next()).await.unwrap(), None);
        let c = h.counts();
        let len = m.body.len() as u64;
        assert_eq!(
            (
                c.totals.messages_sent,
                c.totals.bytes_sent,
                c.totals.collected_low
            ),
            (1, len, 2)
        );
        assert_eq!((c.queued_messages, c.queued_bytes), (0, 0));
        h.shutdown().await;
        assert!(matches!(within("end", owner.ended).await, Ok(Ok(()))));
    }

    /// The stop flushes: an event still pending (no tick made it due) is in a message after
    /// `finish`, with the last statistics, and the thread then ends on `shutdown`.
    #[tokio::test]
    async fn finish_flushes_what_is_pending_and_shutdown_ends_the_thread() {
        let mut owner = spawn(memory(), Arc::new(Notify::new())).unwrap();
        let f = &mut owner.feeder;
        f.events(vec![process(7)], 100).await.unwrap();
        within("finish", f.finish(200, UpstreamDrops::default()))
            .await
            .unwrap();
        let h = owner.handle.clone();
        let mut names = Vec::new();
        while let Some(m) = within("next", h.next()).await.unwrap() {
            let stored = StoredMessage {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                high_events: m.high_events,
                low_events: m.low_events,
            };
            names.extend(
                events_of(&stored)
                    .iter()
                    .map(|e| e["Name"].as_str().unwrap().to_owned()),
            );
            h.settled(m, Settled::Delivered).await.unwrap();
        }
        names.sort();
        assert_eq!(
            names,
            [
                "DroppedEventsStatistics",
                "MessageStatistics",
                "ProcessCreate"
            ]
        );
        h.shutdown().await;
        assert!(matches!(within("end", owner.ended).await, Ok(Ok(()))));
        // Gone: a command now says so instead of waiting for ever.
        let e = within("after the end", h.next()).await.unwrap_err();
        assert_eq!(e.0, "the outbox failed: the outgoing thread has stopped");
    }

    /// A store that fails an acknowledgement: the error reaches the sender's `settled`, and
    /// the message is still there to be sent again.
    #[tokio::test]
    async fn a_store_error_reaches_the_caller() {
        let o = outgoing_with(1 << 20, faulty(true));
        let mut owner = spawn(o, Arc::new(Notify::new())).unwrap();
        let f = &mut owner.feeder;
        f.events(vec![process(3)], 0).await.unwrap();
        f.tick(1_000, 1_000, UpstreamDrops::default())
            .await
            .unwrap();
        let h = owner.handle.clone();
        let m = within("next", h.next()).await.unwrap().unwrap();
        let e = within("settled", h.settled(m.clone(), Settled::Delivered))
            .await
            .unwrap_err();
        assert_eq!(e.0, "the outbox failed: disk I/O error");
        assert_eq!(within("next", h.next()).await.unwrap(), Some(m));
        assert_eq!(h.counts().totals.messages_sent, 0);
        h.shutdown().await;
    }

    /// While the thread is busy (a commit held), the pipeline's commands fill the channel;
    /// the next one waits, and the wait is counted; released, every event arrives.
    #[tokio::test]
    async fn a_full_channel_makes_the_pipeline_wait_and_the_wait_is_counted() {
        let (release, gate) = std_mpsc::channel();
        let (entered, held) = std_mpsc::channel();
        let mut store = faulty(false);
        store.gate = Some(gate);
        store.entered = Some(entered);
        let o = outgoing_with(1 << 20, store);
        let mut owner = spawn_with_capacity(o, Arc::new(Notify::new()), 2).unwrap();
        // The tick's commit holds the thread.
        owner
            .feeder
            .tick(1_000, 1_000, UpstreamDrops::default())
            .await
            .unwrap();
        held.recv_timeout(LIMIT).unwrap();
        owner.feeder.events(vec![process(1)], 1_000).await.unwrap();
        owner.feeder.events(vec![process(2)], 1_000).await.unwrap();
        assert_eq!(owner.feeder.waits(), 0);
        assert_eq!(owner.feeder.backlog(), 2);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            for _ in 0..10 {
                let _ = release.send(());
            }
        });
        within(
            "the third send",
            owner.feeder.events(vec![process(3)], 1_000),
        )
        .await
        .unwrap();
        assert_eq!(owner.feeder.waits(), 1);
        releaser.join().unwrap();
        within(
            "finish",
            owner.feeder.finish(2_000, UpstreamDrops::default()),
        )
        .await
        .unwrap();
        assert_eq!(owner.feeder.backlog(), 0);
        // The three events and the last period's two statistics events (Low by default).
        assert_eq!(owner.handle.counts().totals.collected_low, 3 + 2);
        owner.handle.shutdown().await;
    }

    /// A ConfigurationError of another task (the twin's), pushed through the handle: the
    /// reply comes after a commit (the store was asked to commit), the event is counted as
    /// collected in its queue (ConfigurationError is Low by default) and, at the stop, it is
    /// in a message as given.
    #[tokio::test]
    async fn an_event_pushed_through_the_handle_is_committed_then_sent() {
        use crate::events::operational::ConfigurationErrorType;
        use crate::events::{ConfigurationError, ExtraDetails, Payload};
        let (entered, commits) = std_mpsc::channel();
        let mut store = faulty(false);
        store.entered = Some(entered);
        let mut owner = spawn(outgoing_with(1 << 20, store), Arc::new(Notify::new())).unwrap();
        let h = owner.handle.clone();
        let ev = SecurityEvent {
            id: uuid::Uuid::from_u128(42),
            time_ms: 1_700_000_000_000,
            payload: Payload::ConfigurationError(vec![ConfigurationError {
                configuration_name: "snapshotFrequency".into(),
                error_type: ConfigurationErrorType::TypeMismatch,
                used_configuration: "PT13H".into(),
                message: "expected an ISO 8601 duration".into(),
                extra_details: ExtraDetails::new(),
            }]),
        };
        assert_eq!(commits.try_recv(), Err(std_mpsc::TryRecvError::Empty));
        within("push", h.push(ev, 500)).await.unwrap();
        assert_eq!(commits.try_recv(), Ok(()), "answered before any commit");
        assert_eq!(h.counts().totals.collected_low, 1);
        within(
            "finish",
            owner.feeder.finish(1_000, UpstreamDrops::default()),
        )
        .await
        .unwrap();
        let mut errors = Vec::new();
        while let Some(m) = within("next", h.next()).await.unwrap() {
            let stored = StoredMessage {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                high_events: m.high_events,
                low_events: m.low_events,
            };
            errors.extend(
                events_of(&stored)
                    .into_iter()
                    .filter(|e| e["Name"] == "ConfigurationError"),
            );
            h.settled(m, Settled::Delivered).await.unwrap();
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["Id"], "00000000-0000-0000-0000-00000000002a");
        assert_eq!(
            errors[0]["Payload"],
            serde_json::json!([{
                "ConfigurationName": "snapshotFrequency",
                "ErrorType": "TypeMismatch",
                "UsedConfiguration": "PT13H",
                "Message": "expected an ISO 8601 duration"
            }])
        );
        h.shutdown().await;
    }

    /// The properties are those of the configuration in force when the message is handed
    /// over, not when it was built: a hubResourceId set after the build is on it.
    #[tokio::test]
    async fn next_gives_the_properties_of_the_configuration_in_force() {
        let owner = spawn(memory(), Arc::new(Notify::new())).unwrap();
        owner.feeder.events(vec![process(1)], 0).await.unwrap();
        let h = owner.handle.clone();
        within("flush", h.flush()).await.unwrap();
        let before = within("next", h.next()).await.unwrap().unwrap();
        let low = ("MessagePriority".to_owned(), "Low".to_owned());
        assert_eq!(before.application_properties, std::slice::from_ref(&low));
        let c = AgentConfig {
            hub_resource_id: Some("/subscriptions/s/hub".into()),
            ..AgentConfig::default()
        };
        within("set_config", h.set_config(c, 10)).await.unwrap();
        let after = within("next", h.next()).await.unwrap().unwrap();
        assert_eq!(after.message_id, before.message_id);
        assert_eq!(
            after.application_properties,
            [
                low,
                (
                    "HubResourceId".to_owned(),
                    "/subscriptions/s/hub".to_owned()
                )
            ]
        );
        h.shutdown().await;
    }

    /// A panic of the thread is the supervised task's panic, with its text.
    #[tokio::test]
    async fn a_panic_of_the_thread_ends_its_supervised_task_with_the_text() {
        let owner = spawn(memory(), Arc::new(Notify::new())).unwrap();
        let task = tokio::spawn(supervise(owner.ended));
        owner.handle.fail().await;
        let e = within("the end", task).await.unwrap_err();
        let panic = e.into_panic();
        assert_eq!(
            panic.downcast_ref::<&str>(),
            Some(&"debug.panic_task: the owner task was made to fail")
        );
        assert!(owner.handle.next_message().await.is_err());
    }
}

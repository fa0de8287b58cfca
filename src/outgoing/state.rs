//! The outgoing state ([`Outgoing`]): security events through aggregation and priorities
//! into the store, batched into messages, and the per-period statistics events
//! (MessageStatistics, DroppedEventsStatistics).
//!
//! A synchronous state machine like the other stages. It takes two clocks from its caller:
//! `now_ms`, a monotonic clock for windows and frequencies (a device's wall clock jumps at
//! NTP sync), and `wall_ms`, the time written into the events it makes. `replay` passes
//! record time for both, so its output depends only on its input.
//!
//! Statistics count per period (not cumulative), as the schema's descriptions say: each
//! snapshot (`snapshotFrequency`) reports what happened since the previous one and starts
//! over. Drops that belong to no queue (the socket queue, coalescer eviction, estimated
//! kernel loss) go into the ExtraDetails of DroppedEventsStatistics.
//!
//! The period's counts survive a kill: see [`Outgoing`] for why no step loses or repeats one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::Aggregator;
use super::batch::{Batcher, CHUNK, Envelope, FitError, serialize_fitting};
use crate::config::agent::{AgentConfig, Priority};
use crate::config::duration::millis as ms;
use crate::config::stages;
use crate::events::operational::{
    Diagnostic, DiagnosticSeverity, DroppedEvents, MessageStatistics, QueueName,
};
use crate::events::{ExtraDetails, Payload, SecurityEvent};
use crate::outbox::{Counters, Pending, Store, StoreError, StoredMessage};
use crate::stats::Snapshot;

/// Drops upstream of the queues, reported in DroppedEventsStatistics' ExtraDetails.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpstreamDrops {
    /// Lines the socket reader's queue dropped.
    pub socket_queue_lines: u64,
    /// Audit events the coalescer emitted early because its bounds were reached.
    pub coalescer_evicted: u64,
    /// Estimated kernel/auditd loss (serial gaps).
    pub estimated_kernel_loss: u64,
}

impl UpstreamDrops {
    /// What `self` counted since `mark` (both cumulative).
    fn since(&self, mark: &UpstreamDrops) -> UpstreamDrops {
        UpstreamDrops {
            socket_queue_lines: self
                .socket_queue_lines
                .saturating_sub(mark.socket_queue_lines),
            coalescer_evicted: self
                .coalescer_evicted
                .saturating_sub(mark.coalescer_evicted),
            estimated_kernel_loss: self
                .estimated_kernel_loss
                .saturating_sub(mark.estimated_kernel_loss),
        }
    }

    fn plus(&self, o: &UpstreamDrops) -> UpstreamDrops {
        UpstreamDrops {
            socket_queue_lines: self.socket_queue_lines + o.socket_queue_lines,
            coalescer_evicted: self.coalescer_evicted + o.coalescer_evicted,
            estimated_kernel_loss: self.estimated_kernel_loss + o.estimated_kernel_loss,
        }
    }
}

/// What one statistics period counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeriodStats {
    pub collected_high: u64,
    pub collected_low: u64,
    pub dropped_high: u64,
    pub dropped_low: u64,
    pub messages_sent: u64,
    pub messages_under_4kb: u64,
    pub messages_failed: u64,
    pub bytes_sent: u64,
    pub chunks_sent: u64,
}

/// Totals since start, for the logs and `/metrics`.
pub type TotalStats = PeriodStats;

/// The outgoing half of the module.
///
/// The period's counts survive a kill: every change is handed to the store
/// ([`Store::stage_counters`]), which commits the latest with each transaction, and a new
/// `Outgoing` merges those a killed run left ([`Store::take_restored_counters`]) into its
/// first period. Why a kill between two steps neither loses nor repeats a count:
/// - add or drop → commit: the event's row, the rows dropped for it and their counts are in
///   one transaction; a kill before the commit loses all of them (the event was never
///   collected, the dropped ones are still there). Drops the store makes on its own (the disk
///   over the cap) go into the counters it writes in the transaction that deletes them.
/// - snapshot → commit: the statistics events and the reset period are in one transaction; a
///   kill before the commit leaves the old counts in the file, reported by the next run.
/// - build → send → ack → commit: building moves events into a message and changes no count;
///   the sent counts are staged before the ack and committed with it. A kill before the ack
///   commits sends the message again after the restart (at least once) and counts it once.
///   A rejection counts its failure and drops the same way.
/// - open → first commit: the row is read, not deleted; each commit replaces it with the
///   merged counts, so a kill before the first one hands the same counts to the next run.
pub struct Outgoing {
    config: AgentConfig,
    aggregator: Aggregator,
    batcher: Batcher,
    store: Box<dyn Store + Send>,
    period: PeriodStats,
    totals: TotalStats,
    /// Upstream drop counters at the start of the period (they are cumulative).
    upstream_mark: UpstreamDrops,
    /// The latest upstream drop counters seen.
    upstream_seen: UpstreamDrops,
    /// Upstream drops of this period counted by a killed run (restored at start).
    upstream_carry: UpstreamDrops,
    last_snapshot_ms: u64,
    snapshot_seq: u64,
    last_checkpoint_ms: u64,
    /// The last event that entered the store made it drop others.
    cache_full: bool,
    /// See [`Outgoing::set_run_salt`].
    salt: Uuid,
    max_aggregation_entries: usize,
    /// The latest `now_ms` seen (a settled message lets the next one be built at once).
    now_ms: u64,
    /// The latest `wall_ms` seen.
    wall_ms: u64,
    /// Events dropped because they failed the schema check (the first is logged).
    invalid_events: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("period", &self.period)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

/// A Diagnostic event of this process: something the operator should hear of upstream.
pub fn diagnostic_event(
    severity: DiagnosticSeverity,
    message: String,
    wall_ms: u64,
) -> SecurityEvent {
    SecurityEvent {
        id: Uuid::new_v4(),
        time_ms: wall_ms,
        payload: Payload::Diagnostic(vec![Diagnostic {
            severity,
            message,
            process_id: std::process::id(),
            thread_id: 0,
            extra_details: ExtraDetails::new(),
        }]),
    }
}

/// How often the open aggregation windows are checkpointed: what a hard kill can lose.
pub const CHECKPOINT_EVERY_MS: u64 = 5_000;

impl Outgoing {
    /// `max_aggregation_entries`: per event type (the module setting, default 256).
    pub fn new(
        config: AgentConfig,
        envelope: Envelope,
        mut store: Box<dyn Store + Send>,
        max_aggregation_entries: usize,
        now_ms: u64,
    ) -> Self {
        // A killed run's counts: this period reports them.
        let restored = store.take_restored_counters().unwrap_or_default();
        let mut o = Outgoing {
            aggregator: Aggregator::new(stages::aggregate(&config, max_aggregation_entries)),
            batcher: Batcher::new(stages::batch(&config, 0), envelope, now_ms),
            config,
            store,
            period: restored.period,
            totals: TotalStats::default(),
            upstream_mark: UpstreamDrops::default(),
            upstream_seen: UpstreamDrops::default(),
            upstream_carry: restored.upstream,
            last_snapshot_ms: now_ms,
            snapshot_seq: 0,
            last_checkpoint_ms: now_ms,
            cache_full: false,
            salt: Uuid::nil(),
            max_aggregation_entries,
            now_ms,
            wall_ms: 0,
            invalid_events: 0,
        };
        o.stage();
        o
    }

    /// The period's counters as they are now, to the store: committed with the next
    /// transaction, that is with what they count (see the module docs).
    fn stage(&mut self) {
        let counters = Counters {
            period: self.period.clone(),
            upstream: self
                .upstream_carry
                .plus(&self.upstream_seen.since(&self.upstream_mark)),
        };
        self.store.stage_counters(&counters);
    }

    /// A run of the module with a durable outbox: message ids and statistics event ids must
    /// not repeat those of earlier runs still in the outbox, so they are salted with a value
    /// of this run. `replay` leaves it nil and stays reproducible.
    pub fn set_run_salt(&mut self, salt: Uuid) {
        self.salt = salt;
        self.batcher.set_salt(salt);
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// A new configuration (settings or twin): windows that no longer apply are flushed.
    pub fn set_config(&mut self, config: AgentConfig, now_ms: u64) {
        let mut out = Vec::new();
        self.aggregator.set_config(
            stages::aggregate(&config, self.max_aggregation_entries),
            now_ms,
            &mut out,
        );
        self.batcher.set_config(stages::batch(&config, 0));
        let cache = config.max_local_cache_size_in_bytes;
        let cache_changed = cache != self.config.max_local_cache_size_in_bytes;
        self.config = config;
        if cache_changed {
            match self
                .store
                .set_max_bytes(usize::try_from(cache).unwrap_or(usize::MAX))
            {
                Ok(d) => {
                    self.count_dropped(QueueName::High, d.high);
                    self.count_dropped(QueueName::Low, d.low);
                }
                Err(e) => {
                    tracing::error!(error_id = "E-STORE-REFUSED", error = %e, "the store could not take the new maxLocalCacheSizeInBytes")
                }
            }
        }
        for ev in out {
            self.enqueue(ev);
        }
    }

    /// A security event from the deriver (or an operational one).
    pub fn push(&mut self, ev: SecurityEvent, now_ms: u64) {
        self.now_ms = now_ms;
        if self.config.priority(ev.payload.kind()) == Priority::Off {
            return;
        }
        let mut out = Vec::new();
        self.aggregator.push(ev, now_ms, &mut out);
        for ev in out {
            self.enqueue(ev);
        }
    }

    /// [`Outgoing::push`], then committed: for an event of another task that should not wait
    /// for the next tick to be durable (the twin's ConfigurationError). What the pipeline
    /// pushed before goes into the same transaction, as at a tick.
    pub fn push_committed(&mut self, ev: SecurityEvent, now_ms: u64) -> Result<(), StoreError> {
        self.push(ev, now_ms);
        self.store.commit()
    }

    fn enqueue(&mut self, mut ev: SecurityEvent) {
        let queue = match self.config.priority(ev.payload.kind()) {
            Priority::Off => return,
            Priority::High => QueueName::High,
            Priority::Low => QueueName::Low,
        };
        let limit = self.batcher.config().body_limit();
        let json = match serialize_fitting(&mut ev, self.batcher.envelope(), limit) {
            Ok((json, _)) => json,
            Err(e) => {
                let why = match e {
                    FitError::TooLarge { bytes, limit } => {
                        format!("{bytes} bytes, the limit is {limit}")
                    }
                    FitError::Json(e) => e,
                };
                tracing::error!(error_id = "E-EVENT-TOO-LARGE", event = ev.payload.name(), %why, "an event fits in no message: dropped (counted)");
                self.count_collected(queue, 1);
                self.count_dropped(queue, 1);
                return;
            }
        };
        self.count_collected(queue, 1);
        // Each event is checked alone before it is stored: one invalid event (a bug, or input
        // the stages before let through) would make its whole message invalid, up to 200 KB
        // of good events with it.
        if let Err(violations) = crate::validate::validate_event(&json) {
            self.count_dropped(queue, 1);
            self.invalid_events += 1;
            if self.invalid_events == 1 {
                let why: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
                tracing::error!(error_id = "E-EVENT-INVALID", event = ev.payload.name(), why = %why.join("; "), "an event does not satisfy the schema: dropped (counted; further ones are only counted)");
            }
            return;
        }
        let statistics = matches!(
            ev.payload,
            Payload::MessageStatistics(_) | Payload::DroppedEventsStatistics(_)
        );
        match self.store.add_pending(Pending {
            queue,
            json,
            statistics,
        }) {
            Ok(d) => {
                self.count_dropped(QueueName::High, d.high);
                self.count_dropped(QueueName::Low, d.low);
                // Said once when the cache fills; while it stays full the drops are only
                // counted (the statistics line and DroppedEventsStatistics carry them).
                if d.high + d.low > 0 && !self.cache_full {
                    tracing::warn!(
                        error_id = "W-CACHE-FULL",
                        high = d.high,
                        low = d.low,
                        "the local cache (maxLocalCacheSizeInBytes) is full: oldest events dropped (counted; said once until it has room again)"
                    );
                }
                self.cache_full = d.high + d.low > 0;
            }
            Err(e) => {
                tracing::error!(error_id = "E-STORE-REFUSED", error = %e, "the store refused an event: dropped (counted)");
                self.count_dropped(queue, 1);
            }
        }
    }

    /// The open aggregation windows, as the events they would be now, into the store's
    /// checkpoint (replacing the previous one).
    fn checkpoint_windows(&mut self) -> Result<(), StoreError> {
        let limit = self.batcher.config().body_limit();
        let mut pending = Vec::new();
        for mut ev in self.aggregator.open_events() {
            let queue = match self.config.priority(ev.payload.kind()) {
                Priority::Off => continue,
                Priority::High => QueueName::High,
                Priority::Low => QueueName::Low,
            };
            if let Ok((json, _)) = serialize_fitting(&mut ev, self.batcher.envelope(), limit) {
                // An invalid event stays out of the checkpoint too: it is dropped and counted
                // when its window closes.
                if crate::validate::validate_event(&json).is_ok() {
                    pending.push(Pending::event(queue, json));
                }
            }
        }
        self.store.checkpoint_windows(pending)
    }

    fn count_collected(&mut self, q: QueueName, n: u64) {
        for p in [&mut self.period, &mut self.totals] {
            match q {
                QueueName::High => p.collected_high += n,
                QueueName::Low => p.collected_low += n,
            }
        }
        self.stage();
    }

    fn count_dropped(&mut self, q: QueueName, n: u64) {
        if n == 0 {
            return;
        }
        for p in [&mut self.period, &mut self.totals] {
            match q {
                QueueName::High => p.dropped_high += n,
                QueueName::Low => p.dropped_low += n,
            }
        }
        self.stage();
    }

    /// Windows, statistics snapshots and messages that are due. `upstream` are the current
    /// (cumulative) upstream drop counters.
    pub fn tick(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        upstream: UpstreamDrops,
    ) -> Result<(), StoreError> {
        self.now_ms = now_ms;
        self.wall_ms = wall_ms;
        self.upstream_seen = upstream;
        self.stage();
        let mut out = Vec::new();
        self.aggregator.tick(now_ms, &mut out);
        let closed = !out.is_empty();
        for ev in out {
            self.enqueue(ev);
        }
        // The open windows are checkpointed every few seconds, and at once when some closed
        // (so that a restored checkpoint never repeats an event that went on).
        if closed || now_ms.saturating_sub(self.last_checkpoint_ms) >= CHECKPOINT_EVERY_MS {
            self.last_checkpoint_ms = now_ms;
            self.checkpoint_windows()?;
        }
        let snapshot_ms = ms(self.config.snapshot_frequency);
        if now_ms.saturating_sub(self.last_snapshot_ms) >= snapshot_ms {
            self.last_snapshot_ms = now_ms;
            self.snapshot(wall_ms, upstream);
        }
        self.batcher.tick(self.store.as_mut(), now_ms)?;
        self.store.commit()?;
        self.report_store_failure(wall_ms);
        Ok(())
    }

    /// The store fell back to memory: upstream hears it as a Diagnostic event (the error log
    /// was written where it happened).
    fn report_store_failure(&mut self, wall_ms: u64) {
        let Some(message) = self.store.take_failure() else {
            return;
        };
        let ev = diagnostic_event(DiagnosticSeverity::Error, message, wall_ms);
        self.push(ev, self.now_ms);
    }

    /// A message was settled: the next one can be built now rather than at the next tick.
    /// The settlement is done whatever happens here: a failure is logged and the next tick
    /// tries again.
    fn build_next(&mut self) {
        let built = self
            .batcher
            .tick(self.store.as_mut(), self.now_ms)
            .and_then(|_| self.store.commit());
        if let Err(e) = built {
            tracing::error!(error_id = "E-STORE-REFUSED", error = %e, "the next message could not be built now: the next tick tries again");
        }
        let wall_ms = self.wall_ms;
        self.report_store_failure(wall_ms);
    }

    /// Emit the statistics events of the period that ends now, and start a new one. While
    /// the previous ones are still pending (edgeHub away, nothing built) the period goes on
    /// instead: statistics are never dropped to make room, so this keeps them to one pair,
    /// and the next report covers the longer period.
    pub fn snapshot(&mut self, wall_ms: u64, upstream: UpstreamDrops) {
        if self.store.pending_statistics() > 0 {
            return;
        }
        let p = std::mem::take(&mut self.period);
        let mark = std::mem::replace(&mut self.upstream_mark, upstream);
        let carry = std::mem::take(&mut self.upstream_carry);
        self.upstream_seen = upstream;
        // The reset goes into the transaction of the statistics events (a kill before it
        // commits reports the old counts next time, after it never again).
        self.stage();
        let drops = carry.plus(&upstream.since(&mark));
        self.snapshot_seq += 1;
        let agent = self.batcher.envelope().agent_id();
        let salt = self.salt;
        let id = |name: &str, seq: u64| {
            let name = if salt.is_nil() {
                format!("{name} {seq}")
            } else {
                format!("{name} {salt} {seq}")
            };
            Uuid::new_v5(&agent, name.as_bytes())
        };
        let mut extra = ExtraDetails::new();
        extra.insert(
            "SocketQueueDroppedLines",
            drops.socket_queue_lines.to_string(),
        );
        extra.insert("CoalescerEvicted", drops.coalescer_evicted.to_string());
        extra.insert(
            "EstimatedKernelLoss",
            drops.estimated_kernel_loss.to_string(),
        );
        let dropped = SecurityEvent {
            id: id("DroppedEventsStatistics", self.snapshot_seq),
            time_ms: wall_ms,
            payload: Payload::DroppedEventsStatistics(vec![
                DroppedEvents {
                    queue: QueueName::High,
                    collected_events: p.collected_high,
                    dropped_events: p.dropped_high,
                    extra_details: extra.clone(),
                },
                DroppedEvents {
                    queue: QueueName::Low,
                    collected_events: p.collected_low,
                    dropped_events: p.dropped_low,
                    extra_details: extra,
                },
            ]),
        };
        let mut mextra = ExtraDetails::new();
        mextra.insert("BytesSent", p.bytes_sent.to_string());
        mextra.insert("ChunksSent", p.chunks_sent.to_string());
        let stats = SecurityEvent {
            id: id("MessageStatistics", self.snapshot_seq),
            time_ms: wall_ms,
            payload: Payload::MessageStatistics(MessageStatistics {
                messages_sent: p.messages_sent,
                messages_under_4kb: p.messages_under_4kb,
                total_failed: p.messages_failed,
                extra_details: mextra,
            }),
        };
        // Straight into the queues: statistics are not aggregated.
        for ev in [stats, dropped] {
            if self.config.priority(ev.payload.kind()) != Priority::Off {
                self.enqueue(ev);
            }
        }
    }

    /// Everything into messages (shutdown, end of a replay).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let mut out = Vec::new();
        self.aggregator.flush(&mut out);
        for ev in out {
            self.enqueue(ev);
        }
        self.store.checkpoint_windows(Vec::new())?;
        self.batcher.flush(self.store.as_mut())?;
        self.store.commit()
    }

    /// The oldest message waiting to be sent.
    pub fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        self.store.next_message()
    }

    /// The message was delivered.
    pub fn sent(&mut self, m: &StoredMessage) -> Result<(), StoreError> {
        // Counted before the ack, so the count is committed in the ack's transaction; taken
        // back when the store fails.
        let before = (self.period.clone(), self.totals.clone());
        self.count_sent(m);
        if let Err(e) = self.store.ack(&m.message_id) {
            (self.period, self.totals) = before;
            self.stage();
            return Err(e);
        }
        self.build_next();
        Ok(())
    }

    fn count_sent(&mut self, m: &StoredMessage) {
        let len = m.body.len() as u64;
        for p in [&mut self.period, &mut self.totals] {
            p.messages_sent += 1;
            p.bytes_sent += len;
            p.chunks_sent += len.div_ceil(CHUNK as u64);
            if len < CHUNK as u64 {
                p.messages_under_4kb += 1;
            }
        }
        self.stage();
    }

    /// The message was rejected (final): its events are dropped.
    pub fn rejected(&mut self, m: &StoredMessage) -> Result<(), StoreError> {
        // Counted before the removal, so the counts are committed in its transaction; taken
        // back when the store fails or no longer had the message (then nothing committed).
        let before = (self.period.clone(), self.totals.clone());
        for p in [&mut self.period, &mut self.totals] {
            p.messages_failed += 1;
        }
        self.count_dropped(QueueName::High, m.high_events);
        self.count_dropped(QueueName::Low, m.low_events);
        self.stage();
        match self.store.reject(&m.message_id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                (self.period, self.totals) = before;
                self.stage();
            }
            Err(e) => {
                (self.period, self.totals) = before;
                self.stage();
                return Err(e);
            }
        }
        self.build_next();
        Ok(())
    }

    /// Messages waiting and bytes held by the store.
    pub fn queued(&self) -> (usize, usize) {
        (self.store.message_count(), self.store.bytes())
    }

    pub fn totals(&self) -> &TotalStats {
        &self.totals
    }

    /// The outgoing state's part of the counters snapshot: totals since start and what the
    /// store holds now.
    pub fn fill(&self, s: &mut Snapshot) {
        self.counts().fill(s);
    }

    /// The counters the owner thread publishes ([`super::owner::Counts`]).
    pub fn counts(&self) -> super::owner::Counts {
        let (queued_messages, queued_bytes) = self.queued();
        super::owner::Counts {
            totals: self.totals.clone(),
            queued_messages,
            queued_bytes,
        }
    }

    pub fn batch_stats(&self) -> &crate::outgoing::batch::BatchStats {
        self.batcher.stats()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::process_create::ProcessCreate;
    use crate::outbox::MemoryStore;
    use std::time::Duration;

    pub(crate) fn process(n: u32) -> SecurityEvent {
        SecurityEvent {
            id: Uuid::from_u128(n.into()),
            time_ms: 1_700_000_000_000,
            payload: Payload::ProcessCreate(ProcessCreate {
                executable: "/usr/bin/curl".to_string(),
                process_id: 1000 + i64::from(n),
                parent_process_id: 1,
                user_id: "0".to_string(),
                user_name: None,
                command_line: format!("curl -s http://example.com/{n}"),
                extra_details: ExtraDetails::new(),
            }),
        }
    }

    /// Aggregation off, every priority due every second, statistics every 10 s.
    fn outgoing(cache: u64) -> Outgoing {
        let store = Box::new(MemoryStore::new(usize::try_from(cache).unwrap()));
        outgoing_with(cache, store)
    }

    /// [`outgoing`] on the durable outbox at `path`: dropping it is a SIGKILL (what was not
    /// committed is rolled back).
    fn outgoing_on(path: &std::path::Path, cache: u64) -> Outgoing {
        let store = crate::outbox::sqlite::SqliteStore::open(path, usize::try_from(cache).unwrap());
        outgoing_with(cache, Box::new(store.unwrap()))
    }

    pub(crate) fn outgoing_with(cache: u64, store: Box<dyn Store + Send>) -> Outgoing {
        let mut c = AgentConfig {
            high_priority_message_frequency: Duration::from_secs(1),
            low_priority_message_frequency: Duration::from_secs(1),
            snapshot_frequency: Duration::from_secs(10),
            max_local_cache_size_in_bytes: cache,
            ..AgentConfig::default()
        };
        for a in c.aggregations.iter_mut() {
            a.enabled = false;
        }
        let env = Envelope::new(Uuid::from_u128(1), "0.1.0");
        Outgoing::new(c, env, store, 256, 0)
    }

    pub(crate) fn events_of(m: &StoredMessage) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        v["Events"].as_array().unwrap().clone()
    }

    fn dropped_in(events: &[serde_json::Value]) -> Vec<(String, u64, u64)> {
        events
            .iter()
            .filter(|e| e["Name"] == "DroppedEventsStatistics")
            .flat_map(|e| e["Payload"].as_array().unwrap().clone())
            .map(|p| {
                (
                    p["Queue"].as_str().unwrap().to_owned(),
                    p["CollectedEvents"].as_u64().unwrap(),
                    p["DroppedEvents"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn while_a_report_waits_the_next_period_goes_on_and_no_drop_goes_unreported() {
        let mut o = outgoing(8192);
        let none = UpstreamDrops::default();
        // edgeHub away: the first message waits, unsettled, from t = 1 s on.
        o.push(process(0), 0);
        o.tick(1_000, 1_000, none).unwrap();
        let waiting = o.next_message().unwrap().unwrap();
        // 60 more events into an 8 KB cache: the oldest go, counted.
        for n in 1..=60 {
            o.push(process(n), 2_000);
        }
        o.tick(10_000, 10_000, none).unwrap(); // snapshot 1: pending, not built
        for n in 61..=80 {
            o.push(process(n), 15_000);
        }
        o.tick(20_000, 20_000, none).unwrap(); // snapshot 2: held back
        o.tick(30_000, 30_000, none).unwrap(); // still held back
        assert_eq!(o.store.pending_statistics(), 2, "one pair waits");
        assert_eq!(o.next_message().unwrap().unwrap(), waiting);
        // edgeHub back: everything goes, one message at a time.
        let mut events = Vec::new();
        for now in (31_000..=60_000).step_by(1_000) {
            o.tick(now, now, none).unwrap();
            while let Some(m) = o.next_message().unwrap() {
                events.extend(events_of(&m));
                o.sent(&m).unwrap();
            }
        }
        let reports = dropped_in(&events);
        assert!(reports.len() >= 4, "{reports:?}");
        let low: u64 = reports.iter().filter(|r| r.0 == "Low").map(|r| r.2).sum();
        let processes = events
            .iter()
            .filter(|e| e["Name"] == "ProcessCreate")
            .count() as u64;
        // 81 ProcessCreate (Low by default): each arrived or was reported dropped.
        assert!(low > 0);
        assert_eq!(processes + low, 81, "{reports:?}");
        let collected: u64 = reports.iter().filter(|r| r.0 == "Low").map(|r| r.1).sum();
        assert!(collected >= 81, "{collected}");
    }

    /// edgeHub back: ticks from 1 s to 40 s, each sending all it has; the events that came.
    fn send_everything(o: &mut Outgoing) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        for now in (1_000..=40_000).step_by(1_000) {
            o.tick(now, now, UpstreamDrops::default()).unwrap();
            while let Some(m) = o.next_message().unwrap() {
                events.extend(events_of(&m));
                o.sent(&m).unwrap();
            }
        }
        events
    }

    /// (ProcessCreate Ids that arrived, Low drops reported).
    fn arrived_and_dropped(events: &[serde_json::Value]) -> (Vec<String>, u64) {
        let arrived = events
            .iter()
            .filter(|e| e["Name"] == "ProcessCreate")
            .map(|e| e["Id"].as_str().unwrap().to_owned())
            .collect();
        let low = dropped_in(events)
            .iter()
            .filter(|r| r.0 == "Low")
            .map(|r| r.2)
            .sum();
        (arrived, low)
    }

    #[test]
    fn drop_counts_a_killed_run_committed_are_reported_by_the_next_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let none = UpstreamDrops::default();
        // Run 1, edgeHub away: 60 events into an 8 KB cache; the tick commits them with
        // their drops. 5 more after it die with the kill (never collected, never dropped).
        {
            let mut o = outgoing_on(&path, 8192);
            for n in 0..60 {
                o.push(process(n), 500);
            }
            o.tick(1_000, 1_000, none).unwrap();
            assert!(o.period.dropped_low > 0, "{:?}", o.period);
            for n in 60..65 {
                o.push(process(n), 1_500);
            }
        }
        // Run 2: the killed run's counts are its period's; 20 more events, committed with
        // the merged counts, then killed too.
        let restored = {
            let mut o = outgoing_on(&path, 8192);
            let restored = o.period.clone();
            for n in 100..120 {
                o.push(process(n), 500);
            }
            o.tick(1_000, 1_000, none).unwrap();
            restored
        };
        assert_eq!(restored.collected_low, 60, "{restored:?}");
        assert!(restored.dropped_low > 0, "{restored:?}");
        // Run 3, edgeHub back: each of the 80 committed events arrived or was reported
        // dropped, once.
        let mut o = outgoing_on(&path, 8192);
        let (arrived, low) = arrived_and_dropped(&send_everything(&mut o));
        assert_eq!(arrived.len() as u64 + low, 80, "{} arrived", arrived.len());
        for n in 60..65 {
            assert!(!arrived.contains(&Uuid::from_u128(n).to_string()));
        }
    }

    #[test]
    fn a_snapshot_commits_with_its_reset_so_a_kill_never_reports_a_period_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let none = UpstreamDrops::default();
        // Run 1: drops committed; a snapshot is taken, and the kill comes before its commit.
        let dropped = {
            let mut o = outgoing_on(&path, 8192);
            for n in 0..60 {
                o.push(process(n), 500);
            }
            o.tick(1_000, 1_000, none).unwrap();
            let dropped = o.period.dropped_low;
            o.snapshot(1_500, none);
            assert_eq!(o.store.pending_statistics(), 2);
            dropped
        };
        // Run 2: the snapshot died with its transaction, the counts are back; this run's
        // snapshot commits with the reset, then a kill.
        {
            let mut o = outgoing_on(&path, 8192);
            assert_eq!(o.store.pending_statistics(), 0);
            assert_eq!(o.period.dropped_low, dropped);
            o.tick(10_000, 10_000, none).unwrap();
            assert_eq!(o.store.pending_statistics(), 2);
        }
        // Run 3: the reported period is not reported again (what it has are the drops the
        // statistics events themselves made room with).
        let mut o = outgoing_on(&path, 8192);
        assert!(o.period.dropped_low < dropped, "{:?}", o.period);
        let (arrived, low) = arrived_and_dropped(&send_everything(&mut o));
        assert_eq!(arrived.len() as u64 + low, 60, "{} arrived", arrived.len());
    }

    #[test]
    fn a_sent_message_is_counted_in_the_transaction_of_its_ack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let len = {
            let mut o = outgoing_on(&path, 1 << 20);
            o.push(process(0), 0);
            o.tick(1_000, 1_000, UpstreamDrops::default()).unwrap();
            let m = o.next_message().unwrap().unwrap();
            o.sent(&m).unwrap();
            m.body.len() as u64
        }; // killed right after the acknowledgement
        let o = outgoing_on(&path, 1 << 20);
        assert_eq!(o.next_message().unwrap(), None);
        let p = &o.period;
        assert_eq!(
            (p.messages_sent, p.bytes_sent, p.collected_low),
            (1, len, 1)
        );
    }

    #[test]
    fn an_invalid_event_is_dropped_and_counted_and_the_rest_of_its_message_is_delivered() {
        let mut o = outgoing(1_000_000);
        let none = UpstreamDrops::default();
        // Synthetic: an event dated in the year 10000 (the parser refuses such records; this
        // stands for any event the stages before let through invalid).
        let mut bad = process(1);
        bad.time_ms = (crate::audit::parse::MAX_RECORD_SEC + 1) * 1000;
        o.push(process(0), 0);
        o.push(bad, 0);
        o.push(process(2), 0);
        o.tick(1_000, 1_000, none).unwrap();
        let m = o.next_message().unwrap().unwrap();
        assert_eq!(crate::validate::validate_message(&m.body), Ok(()));
        let pids: Vec<i64> = events_of(&m)
            .iter()
            .map(|e| e["Payload"][0]["ProcessId"].as_i64().unwrap())
            .collect();
        assert_eq!(pids, vec![1000, 1002]);
        o.sent(&m).unwrap();
        // The drop is reported in the period's DroppedEventsStatistics.
        o.tick(10_000, 10_000, none).unwrap();
        let mut events = Vec::new();
        while let Some(m) = o.next_message().unwrap() {
            assert_eq!(crate::validate::validate_message(&m.body), Ok(()));
            events.extend(events_of(&m));
            o.sent(&m).unwrap();
        }
        let reports = dropped_in(&events);
        assert!(reports.contains(&("Low".to_owned(), 3, 1)), "{reports:?}");
        assert_eq!(o.totals().dropped_low, 1);
    }

    /// The outgoing state fills the totals of what edgeHub accepted and what the store holds
    /// now.
    #[test]
    fn the_outgoing_state_fills_its_part_of_the_snapshot() {
        let none = UpstreamDrops::default();
        let mut o = outgoing(1_000_000);
        for n in 0..3 {
            o.push(process(n), 0);
        }
        o.tick(1_000, 1_000, none).unwrap();
        let m = o.next_message().unwrap().unwrap();
        o.sent(&m).unwrap();
        for n in 3..5 {
            o.push(process(n), 1_000);
        }
        let (messages, bytes) = o.queued();
        assert!(bytes > 0);
        let mut s = Snapshot::default();
        o.fill(&mut s);
        let len = m.body.len() as u64;
        let expected = Snapshot {
            messages_sent: 1,
            bytes_sent: len,
            chunks_sent: len.div_ceil(CHUNK as u64),
            queued_messages: messages as u64,
            queued_bytes: bytes as u64,
            ..Snapshot::default()
        };
        assert_eq!(s, expected);
    }

    #[test]
    fn a_smaller_cache_from_the_twin_reaches_the_store_and_its_drops_are_counted() {
        let mut o = outgoing(1_000_000);
        for n in 0..100 {
            o.push(process(n), 0);
        }
        assert!(o.queued().1 > 20_000);
        let mut smaller = o.config().clone();
        smaller.max_local_cache_size_in_bytes = 8192;
        o.set_config(smaller, 0);
        assert!(o.queued().1 <= 8192, "{}", o.queued().1);
        assert!(o.period.dropped_low > 50, "{:?}", o.period);
        assert_eq!(
            o.period.dropped_low + o.store.pending_sizes(QueueName::Low).len() as u64,
            100
        );
    }
}

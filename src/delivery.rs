//! From security events to stored messages: aggregation, priorities, the store, batching,
//! and the per-period statistics events (MessageStatistics, DroppedEventsStatistics).
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

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::agent_config::{AgentConfig, Priority};
use crate::aggregate::{AggregateConfig, Aggregator};
use crate::events::operational::{
    Diagnostic, DiagnosticSeverity, DroppedEvents, MessageStatistics, QueueName,
};
use crate::events::{ExtraDetails, Payload, SecurityEvent};
use crate::message::{BatchConfig, Batcher, CHUNK, Envelope, FitError, serialize_fitting};
use crate::outbox::{Pending, Store, StoreError, StoredMessage};

/// Drops upstream of the queues, reported in DroppedEventsStatistics' ExtraDetails.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpstreamDrops {
    /// Lines the socket reader's queue dropped.
    pub socket_queue_lines: u64,
    /// Audit events the coalescer emitted early because its bounds were reached.
    pub coalescer_evicted: u64,
    /// Estimated kernel/auditd loss (serial gaps).
    pub estimated_kernel_loss: u64,
}

/// What one statistics period counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
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
pub struct Outgoing {
    config: AgentConfig,
    aggregator: Aggregator,
    batcher: Batcher,
    store: Box<dyn Store + Send>,
    period: PeriodStats,
    totals: TotalStats,
    /// Upstream drop counters at the start of the period (they are cumulative).
    upstream_mark: UpstreamDrops,
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The batching part of the agent configuration.
pub fn batch_config(c: &AgentConfig, app_properties_bytes: usize) -> BatchConfig {
    BatchConfig {
        max_message_bytes: usize::try_from(c.max_message_size_in_bytes).unwrap_or(usize::MAX),
        app_properties_bytes,
        high_frequency_ms: ms(c.high_priority_message_frequency),
        low_frequency_ms: ms(c.low_priority_message_frequency),
    }
}

fn aggregate_config(c: &AgentConfig, max_entries: usize) -> AggregateConfig {
    let max_bytes = usize::try_from(c.max_local_cache_size_in_bytes).unwrap_or(usize::MAX);
    AggregateConfig {
        process_create: c.aggregation("ProcessCreate").map(ms),
        connection_create: c.aggregation("ConnectionCreate").map(ms),
        max_entries,
        max_bytes,
    }
}

impl Outgoing {
    /// `max_aggregation_entries`: per event type (the module setting, default 256).
    pub fn new(
        config: AgentConfig,
        envelope: Envelope,
        store: Box<dyn Store + Send>,
        max_aggregation_entries: usize,
        now_ms: u64,
    ) -> Self {
        Outgoing {
            aggregator: Aggregator::new(aggregate_config(&config, max_aggregation_entries)),
            batcher: Batcher::new(batch_config(&config, 0), envelope, now_ms),
            config,
            store,
            period: PeriodStats::default(),
            totals: TotalStats::default(),
            upstream_mark: UpstreamDrops::default(),
            last_snapshot_ms: now_ms,
            snapshot_seq: 0,
            last_checkpoint_ms: now_ms,
            cache_full: false,
            salt: Uuid::nil(),
            max_aggregation_entries,
            now_ms,
            wall_ms: 0,
        }
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
            aggregate_config(&config, self.max_aggregation_entries),
            now_ms,
            &mut out,
        );
        self.batcher.set_config(batch_config(&config, 0));
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
        if self.config.priority(ev.payload.name()) == Priority::Off {
            return;
        }
        let mut out = Vec::new();
        self.aggregator.push(ev, now_ms, &mut out);
        for ev in out {
            self.enqueue(ev);
        }
    }

    fn enqueue(&mut self, mut ev: SecurityEvent) {
        let queue = match self.config.priority(ev.payload.name()) {
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
            let queue = match self.config.priority(ev.payload.name()) {
                Priority::Off => continue,
                Priority::High => QueueName::High,
                Priority::Low => QueueName::Low,
            };
            if let Ok((json, _)) = serialize_fitting(&mut ev, self.batcher.envelope(), limit) {
                pending.push(Pending::event(queue, json));
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
    }

    fn count_dropped(&mut self, q: QueueName, n: u64) {
        for p in [&mut self.period, &mut self.totals] {
            match q {
                QueueName::High => p.dropped_high += n,
                QueueName::Low => p.dropped_low += n,
            }
        }
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
            upstream
                .socket_queue_lines
                .saturating_sub(mark.socket_queue_lines)
                .to_string(),
        );
        extra.insert(
            "CoalescerEvicted",
            upstream
                .coalescer_evicted
                .saturating_sub(mark.coalescer_evicted)
                .to_string(),
        );
        extra.insert(
            "EstimatedKernelLoss",
            upstream
                .estimated_kernel_loss
                .saturating_sub(mark.estimated_kernel_loss)
                .to_string(),
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
            if self.config.priority(ev.payload.name()) != Priority::Off {
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
        self.store.ack(&m.message_id)?;
        self.count_sent(m);
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
    }

    /// The message was rejected (final): its events are dropped.
    pub fn rejected(&mut self, m: &StoredMessage) -> Result<(), StoreError> {
        if let Some(m) = self.store.reject(&m.message_id)? {
            for p in [&mut self.period, &mut self.totals] {
                p.messages_failed += 1;
            }
            self.count_dropped(QueueName::High, m.high_events);
            self.count_dropped(QueueName::Low, m.low_events);
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

    pub fn batch_stats(&self) -> &crate::message::BatchStats {
        self.batcher.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::process_create::ProcessCreate;
    use crate::outbox::MemoryStore;

    fn process(n: u32) -> SecurityEvent {
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
        let store = Box::new(MemoryStore::new(usize::try_from(cache).unwrap()));
        Outgoing::new(c, env, store, 256, 0)
    }

    fn events_of(m: &StoredMessage) -> Vec<serde_json::Value> {
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

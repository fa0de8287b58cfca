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
use super::properties;
use crate::config::agent::{AgentConfig, Priority};
use crate::config::duration::millis as ms;
use crate::config::stages;
use crate::events::operational::{
    Diagnostic, DiagnosticSeverity, DroppedEvents, MessageStatistics, QueueName,
};
use crate::events::{EventKind, ExtraDetails, Payload, SecurityEvent};
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
    /// Events of a type whose priority is `Off`: configured out, neither collected nor
    /// dropped (they belong to no queue, and a drop would read as a full cache or a
    /// rejection), but counted, so that what the pipeline derived still adds up: reported as
    /// `ConfiguredOutEvents` in DroppedEventsStatistics' ExtraDetails and as
    /// `events_configured_out_total`.
    pub configured_out: u64,
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
/// - window closed → commit: an entry that left a window (closed, evicted, a configuration)
///   is a pending event, so the checkpoint that still holds it is replaced before the next
///   commit, whichever step commits ([`Aggregator::emitted`] tells it moved); a kill
///   before that commit loses neither (the old checkpoint comes back as pending events).
/// - configuration → commit: closed windows, requeued events and the drops of a smaller
///   cache are committed together by [`Outgoing::set_config`]; a requeue changes no count,
///   and a kill before the commit leaves the events in their old queue (sent under the old
///   priority, not lost).
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
    /// [`Aggregator::emitted`] when the windows were last checkpointed: when it moved, the
    /// checkpoint still holds entries that are pending events now, and is replaced before
    /// the next commit (else a kill would restore them a second time).
    checkpointed_emitted: u64,
    /// The last event that entered the store made it drop others.
    cache_full: bool,
    /// See [`Outgoing::set_run_salt`].
    salt: Uuid,
    /// See [`Outgoing::set_output_name`]: its property is counted in each message's size.
    output_name: Option<String>,
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
            batcher: Batcher::new(
                stages::batch(&config, properties::bytes(&config, None)),
                envelope,
                now_ms,
            ),
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
            checkpointed_emitted: 0,
            cache_full: false,
            salt: Uuid::nil(),
            output_name: None,
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

    /// The module output the messages are sent to (`edgehub.output_name`; None: none): the
    /// telemetry link adds its `iothub-outputname` property to every message, so the size
    /// cap reserves it too ([`properties::bytes`]) from the next message built.
    pub fn set_output_name(&mut self, output: Option<String>) {
        self.output_name = output;
        self.batcher
            .set_config(stages::batch(&self.config, self.properties_bytes()));
    }

    /// What the application properties of a message under the configuration in force cost
    /// on the wire, at most ([`properties::bytes`]).
    pub fn properties_bytes(&self) -> usize {
        properties::bytes(&self.config, self.output_name.as_deref())
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// A new configuration (settings or twin), applied live; nothing collected is lost or
    /// sent twice, every drop is counted. An equal configuration changes nothing. Else, in
    /// this order:
    /// - a type whose priority changes has its open aggregation window closed and emitted
    ///   under the old priority (also when it becomes `Off`: its events were collected);
    /// - its pending events move to the new queue when it changes between High and Low
    ///   ([`Store::requeue`]: sent under the new priority); pending events of a type now
    ///   `Off` stay and are sent under the old one; from now on events of an `Off` type are
    ///   not collected (counted as configured out, see [`PeriodStats::configured_out`]);
    /// - aggregation switched off closes and emits the open window (with its HitCount);
    ///   switched on opens one now; a new interval applies to the open window (closed at
    ///   once when it is already longer);
    /// - frequencies and the message size apply to the next message built (a shorter
    ///   frequency makes what is due go at the next tick; messages already built stay as
    ///   they are), and so do the application properties' bytes ([`properties::bytes`]);
    /// - a smaller `maxLocalCacheSizeInBytes` drops by the rule, counted per queue;
    /// - `snapshotFrequency` applies from the period in progress.
    ///
    /// Then the windows checkpoint is brought up to date and everything is committed in one
    /// transaction (a failure is logged; the next tick commits again).
    pub fn set_config(&mut self, config: AgentConfig, now_ms: u64) {
        if config == self.config {
            return;
        }
        self.now_ms = now_ms;
        let mut out = Vec::new();
        let changed: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|&k| self.config.priority(k) != config.priority(k))
            .collect();
        for &kind in &changed {
            self.aggregator.close(kind, now_ms, &mut out);
        }
        // Still under the old configuration: the windows' events go to the old queue, and
        // move on with the rest of their type below.
        for ev in out.drain(..) {
            self.enqueue(ev);
        }
        for &kind in &changed {
            let to = match (self.config.priority(kind), config.priority(kind)) {
                (Priority::Low, Priority::High) => QueueName::High,
                (Priority::High, Priority::Low) => QueueName::Low,
                _ => continue,
            };
            match self.store.requeue(kind.name(), to) {
                Ok(moved) => {
                    tracing::info!(event = kind.name(), queue = ?to, moved, "priority changed: pending events moved to the new queue");
                }
                Err(e) => {
                    tracing::error!(error_id = "E-STORE-REFUSED", event = kind.name(), error = %e, "the pending events of a type whose priority changed could not be moved: they are sent under the old priority")
                }
            }
        }
        let cache = config.max_local_cache_size_in_bytes;
        let cache_changed = cache != self.config.max_local_cache_size_in_bytes;
        self.config = config;
        self.aggregator.set_config(
            stages::aggregate(&self.config, self.max_aggregation_entries),
            now_ms,
            &mut out,
        );
        self.batcher
            .set_config(stages::batch(&self.config, self.properties_bytes()));
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
        if let Err(e) = self.refresh_checkpoint().and_then(|()| self.store.commit()) {
            tracing::error!(error_id = "E-STORE-REFUSED", error = %e, "the new configuration's changes to the outbox could not be committed now: the next tick tries again");
        }
    }

    /// The application properties of `m` under the configuration in force
    /// ([`properties::of`]).
    pub fn application_properties(&self, m: &StoredMessage) -> Vec<(String, String)> {
        properties::of(&self.config, m.high_events > 0)
    }

    /// A security event from the deriver (or an operational one).
    pub fn push(&mut self, ev: SecurityEvent, now_ms: u64) {
        self.now_ms = now_ms;
        if self.config.priority(ev.payload.kind()) == Priority::Off {
            self.count_configured_out();
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
        self.refresh_checkpoint()?;
        self.store.commit()
    }

    fn enqueue(&mut self, mut ev: SecurityEvent) {
        let queue = match self.config.priority(ev.payload.kind()) {
            // Not reached by the events of a type switched Off (push leaves them out, and
            // set_config emits the type's window before the switch); counted all the same.
            Priority::Off => {
                self.count_configured_out();
                return;
            }
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
        self.store.checkpoint_windows(pending)?;
        self.checkpointed_emitted = self.aggregator.emitted();
        Ok(())
    }

    /// Replace the windows checkpoint when windows emitted events since it was taken (an
    /// event that closed a due window, a full cache, a configuration): called before every
    /// commit, so that no commit has an entry both pending and in the checkpoint.
    fn refresh_checkpoint(&mut self) -> Result<(), StoreError> {
        if self.aggregator.emitted() != self.checkpointed_emitted {
            self.last_checkpoint_ms = self.now_ms;
            self.checkpoint_windows()?;
        }
        Ok(())
    }

    fn count_configured_out(&mut self) {
        for p in [&mut self.period, &mut self.totals] {
            p.configured_out += 1;
        }
        self.stage();
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
        for ev in out {
            self.enqueue(ev);
        }
        // The open windows are checkpointed every few seconds, and at once when some emitted
        // events since the last checkpoint (here or between ticks: so that a restored
        // checkpoint never repeats an event that went on).
        if now_ms.saturating_sub(self.last_checkpoint_ms) >= CHECKPOINT_EVERY_MS {
            self.last_checkpoint_ms = now_ms;
            self.checkpoint_windows()?;
        } else {
            self.refresh_checkpoint()?;
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
        extra.insert("ConfiguredOutEvents", p.configured_out.to_string());
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
        // Straight into the queues: statistics are not aggregated. A statistics type set to
        // Off is not sent (counted as configured out, in the next period).
        for ev in [stats, dropped] {
            self.enqueue(ev);
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
        self.checkpointed_emitted = self.aggregator.emitted();
        self.batcher.flush(self.store.as_mut())?;
        self.store.commit()
    }

    /// The oldest message waiting to be sent.
    pub fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        self.store.next_message()
    }

    /// The message was delivered.
    pub fn sent(&mut self, m: &StoredMessage) -> Result<(), StoreError> {
        // The ack commits: the checkpoint first (see `refresh_checkpoint`).
        self.refresh_checkpoint()?;
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
        // The removal commits: the checkpoint first (see `refresh_checkpoint`).
        self.refresh_checkpoint()?;
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

    // ---- a configuration applied live (issue 12, point 2). The events are synthetic
    // ProcessCreate and Diagnostic events: these tests are about priorities, windows and
    // sizes, not about what the events say.

    /// Every message the outgoing state builds from now until `until_ms` (a tick a second),
    /// each settled as delivered at once.
    fn drain(o: &mut Outgoing, from_ms: u64, until_ms: u64) -> Vec<StoredMessage> {
        let mut all = Vec::new();
        for now in (from_ms..=until_ms).step_by(1_000) {
            o.tick(now, now, UpstreamDrops::default()).unwrap();
            while let Some(m) = o.next_message().unwrap() {
                o.sent(&m).unwrap();
                all.push(m);
            }
        }
        all
    }

    fn named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
        events.iter().filter(|e| e["Name"] == name).collect()
    }

    fn hit_count(e: &serde_json::Value) -> Option<&str> {
        e["Payload"][0]["ExtraDetails"]["HitCount"].as_str()
    }

    /// `c` with ProcessCreate and ConnectionCreate aggregated over `secs`.
    fn aggregating(c: &AgentConfig, secs: u64) -> AgentConfig {
        let mut c = c.clone();
        for a in c.aggregations.iter_mut() {
            a.enabled = true;
            a.interval = Duration::from_secs(secs);
        }
        c
    }

    fn with_priority(c: &AgentConfig, kind: EventKind, p: Priority) -> AgentConfig {
        let mut c = c.clone();
        c.set_priority(kind, p);
        c
    }

    fn diagnostic(n: u64) -> SecurityEvent {
        // Two digits: every one the same size.
        let mut ev = diagnostic_event(
            DiagnosticSeverity::Warning,
            format!("d{n:02}"),
            1_700_000_000_000,
        );
        ev.id = Uuid::from_u128(u128::from(n) + 1_000);
        ev
    }

    /// An equal configuration is no change: the open window is neither closed nor restarted
    /// (it closes when it would have), nothing is stored, nothing counted.
    #[test]
    fn an_equal_configuration_changes_nothing() {
        let mut o = outgoing(1_000_000);
        let c = aggregating(o.config(), 60);
        o.set_config(c, 0);
        for _ in 0..3 {
            o.push(process(1), 0);
        }
        let period = o.period.clone();
        let emitted = o.aggregator.emitted();
        o.set_config(o.config().clone(), 59_000);
        assert_eq!(o.aggregator.len().0, 1);
        assert_eq!(o.aggregator.emitted(), emitted);
        assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 0);
        assert_eq!(o.period, period);
        let before: Vec<_> = drain(&mut o, 59_999, 59_999)
            .iter()
            .flat_map(events_of)
            .collect();
        assert_eq!(named(&before, "ProcessCreate").len(), 0);
        assert_eq!(o.aggregator.len().0, 1, "the window is not due before 60 s");
        let after: Vec<_> = drain(&mut o, 60_000, 61_000)
            .iter()
            .flat_map(events_of)
            .collect();
        assert_eq!(
            o.aggregator.len().0,
            0,
            "the window opened at 0 closes at 60 s"
        );
        let processes = named(&after, "ProcessCreate");
        assert_eq!(processes.len(), 1);
        assert_eq!(hit_count(processes[0]), Some("3"));
    }

    /// Off: the open window of the type is closed and emitted under its old priority (the
    /// commit replaces the checkpoint, so a kill right after repeats nothing); new events of
    /// it are not collected, counted as configured out and reported; what was pending is
    /// sent.
    #[test]
    fn a_type_switched_off_emits_its_window_stops_being_collected_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let mut o = outgoing_on(&path, 1_000_000);
            let c = aggregating(o.config(), 60);
            o.set_config(c, 0);
            o.push(process(1), 0);
            o.push(process(1), 0);
            o.push(process(2), 0);
            // The checkpoint (every 5 s) holds the two entries, committed.
            o.tick(5_000, 5_000, UpstreamDrops::default()).unwrap();
            assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 0);
            let off = with_priority(o.config(), EventKind::ProcessCreate, Priority::Off);
            o.set_config(off, 6_000);
            assert_eq!(o.aggregator.len().0, 0);
            assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 2);
            assert_eq!(o.period.collected_low, 2);
        } // killed right after the configuration's commit
        let mut o = outgoing_on(&path, 1_000_000);
        let off = with_priority(
            &aggregating(o.config(), 60),
            EventKind::ProcessCreate,
            Priority::Off,
        );
        o.set_config(off, 0);
        assert_eq!(
            o.store.pending_sizes(QueueName::Low).len(),
            2,
            "the checkpoint did not come back beside the closed window's events"
        );
        o.push(process(3), 1_000);
        o.push(diagnostic(1), 1_000);
        assert_eq!(o.period.configured_out, 1);
        assert_eq!(o.totals().configured_out, 1);
        let mut snapshot = Snapshot::default();
        o.fill(&mut snapshot);
        assert_eq!(snapshot.configured_out, 1, "events_configured_out_total");
        let events: Vec<_> = drain(&mut o, 1_000, 12_000)
            .iter()
            .flat_map(events_of)
            .collect();
        let processes = named(&events, "ProcessCreate");
        let hits: Vec<_> = processes.iter().map(|e| hit_count(e)).collect();
        assert_eq!(hits, [Some("2"), Some("1")]);
        assert_eq!(named(&events, "Diagnostic").len(), 1);
        let dropped = named(&events, "DroppedEventsStatistics");
        assert_eq!(dropped.len(), 1);
        for q in dropped[0]["Payload"].as_array().unwrap() {
            assert_eq!(q["ExtraDetails"]["ConfiguredOutEvents"], "1", "{q}");
            assert_eq!(q["DroppedEvents"], 0, "{q}");
        }
    }

    /// Pending events of a type already `Off` are still sent, under their old queue.
    #[test]
    fn events_pending_when_their_type_is_switched_off_are_still_sent() {
        let mut o = outgoing(1_000_000);
        for n in 1..=3 {
            o.push(process(n), 0);
        }
        let off = with_priority(o.config(), EventKind::ProcessCreate, Priority::Off);
        o.set_config(off, 100);
        o.push(process(4), 200);
        let m = drain(&mut o, 1_000, 1_000);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].high_events, m[0].low_events), (0, 3));
        let pids: Vec<_> = events_of(&m[0])
            .iter()
            .map(|e| e["Payload"][0]["ProcessId"].as_i64().unwrap())
            .collect();
        assert_eq!(pids, [1001, 1002, 1003]);
        assert_eq!(o.period.configured_out, 1);
    }

    /// Low → High: the pending events of the type and its open window move to the High
    /// queue and go out as High (due at the High frequency, counted as High, the message's
    /// MessagePriority High); other types stay Low.
    #[test]
    fn a_type_whose_priority_changes_is_sent_under_the_new_one_window_included() {
        let mut o = outgoing(1_000_000);
        // High every second, Low every 100 s.
        let mut c = o.config().clone();
        c.low_priority_message_frequency = Duration::from_secs(100);
        o.set_config(c, 0);
        o.push(process(1), 0);
        o.push(diagnostic(1), 0);
        o.push(process(2), 0);
        let mut c = aggregating(o.config(), 60);
        c.aggregations[1].enabled = false; // ConnectionCreate: only ProcessCreate matters
        o.set_config(c, 100);
        o.push(process(3), 200);
        o.push(process(3), 300);
        assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 3);
        let high = with_priority(o.config(), EventKind::ProcessCreate, Priority::High);
        o.set_config(high, 400);
        assert_eq!(o.aggregator.len().0, 0);
        assert_eq!(o.store.pending_sizes(QueueName::High).len(), 3);
        assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 1);
        o.tick(1_000, 1_000, UpstreamDrops::default()).unwrap();
        let m = o.next_message().unwrap().unwrap();
        let events = events_of(&m);
        let pids: Vec<_> = named(&events, "ProcessCreate")
            .iter()
            .map(|e| e["Payload"][0]["ProcessId"].as_i64().unwrap())
            .collect();
        assert_eq!(
            pids,
            [1001, 1002, 1003],
            "oldest first, the window's event last"
        );
        assert_eq!(hit_count(named(&events, "ProcessCreate")[2]), Some("2"));
        // The Low diagnostic fills the message's 4 KB chunk (the batching rule).
        assert_eq!((m.high_events, m.low_events), (3, 1));
        assert_eq!(
            o.application_properties(&m),
            [("MessagePriority".to_owned(), "High".to_owned())]
        );
        o.sent(&m).unwrap();
        // Back to Low: a new event of the type waits for the Low frequency.
        let low = with_priority(o.config(), EventKind::ProcessCreate, Priority::Low);
        o.set_config(low, 1_500);
        o.push(process(4), 1_600);
        o.flush().unwrap();
        let m = o.next_message().unwrap().unwrap();
        assert_eq!((m.high_events, m.low_events), (0, 1));
        assert_eq!(
            o.application_properties(&m),
            [("MessagePriority".to_owned(), "Low".to_owned())]
        );
    }

    /// A shorter frequency: what is already due by it goes at the next tick, not after the
    /// old period.
    #[test]
    fn a_shorter_frequency_sends_what_is_due_at_the_next_tick() {
        let mut o = outgoing(1_000_000);
        let mut c = o.config().clone();
        c.low_priority_message_frequency = Duration::from_secs(100);
        o.set_config(c, 0);
        o.push(process(1), 0);
        o.tick(10_000, 10_000, UpstreamDrops::default()).unwrap();
        assert_eq!(o.next_message().unwrap(), None, "not due under 100 s");
        let mut c = o.config().clone();
        c.low_priority_message_frequency = Duration::from_secs(5);
        o.set_config(c, 10_500);
        o.tick(11_000, 11_000, UpstreamDrops::default()).unwrap();
        let m = o.next_message().unwrap().expect("due under 5 s");
        assert_eq!(named(&events_of(&m), "ProcessCreate").len(), 1);
    }

    /// Aggregation switched off: the open window is emitted with its HitCounts, then events
    /// pass one by one; a shorter interval closes a window that is already longer.
    #[test]
    fn aggregation_off_emits_the_open_window_and_new_events_pass_without_it() {
        let mut o = outgoing(1_000_000);
        let c = aggregating(o.config(), 3_600);
        o.set_config(c, 0);
        for _ in 0..3 {
            o.push(process(1), 0);
        }
        o.push(process(2), 0);
        let mut shorter = o.config().clone();
        shorter.aggregations[0].interval = Duration::from_secs(10);
        o.set_config(shorter, 20_000);
        assert_eq!(o.aggregator.len().0, 0, "the window was over 10 s old");
        assert_eq!(o.store.pending_sizes(QueueName::Low).len(), 2);
        o.push(process(1), 21_000);
        o.push(process(1), 21_000);
        let mut off = o.config().clone();
        off.aggregations[0].enabled = false;
        o.set_config(off, 22_000);
        o.push(process(1), 23_000);
        o.flush().unwrap();
        let mut events = Vec::new();
        while let Some(m) = o.next_message().unwrap() {
            events.extend(events_of(&m));
            o.sent(&m).unwrap();
        }
        let hits: Vec<_> = named(&events, "ProcessCreate")
            .iter()
            .map(|e| hit_count(e))
            .collect();
        assert_eq!(hits, [Some("3"), Some("1"), Some("2"), None]);
    }

    /// A smaller cache drops by the rule (Low first, then High), counted per queue, and
    /// DroppedEventsStatistics reports exactly those drops.
    #[test]
    fn a_smaller_cache_drops_by_the_rule_and_the_statistics_report_it_per_queue() {
        let mut o = outgoing(1_000_000);
        let high = with_priority(o.config(), EventKind::Diagnostic, Priority::High);
        o.set_config(high, 0);
        for n in 0..20 {
            o.push(diagnostic(n), 0);
            o.push(process(n as u32), 0);
        }
        let (high_len, low_len) = (
            o.store.pending_sizes(QueueName::High),
            o.store.pending_sizes(QueueName::Low),
        );
        // Room for 5 High events: every Low one goes, and 15 High ones.
        let mut smaller = o.config().clone();
        smaller.max_local_cache_size_in_bytes = high_len[..5].iter().sum::<usize>() as u64;
        o.set_config(smaller, 100);
        assert_eq!(o.store.pending_sizes(QueueName::Low), Vec::<usize>::new());
        assert_eq!(o.store.pending_sizes(QueueName::High), high_len[15..]);
        assert_eq!(
            (o.period.dropped_high, o.period.dropped_low),
            (15, low_len.len() as u64)
        );
        let mut bigger = o.config().clone();
        bigger.max_local_cache_size_in_bytes = 1_000_000;
        o.set_config(bigger, 200);
        let events: Vec<_> = drain(&mut o, 1_000, 10_000)
            .iter()
            .flat_map(events_of)
            .collect();
        let reports = dropped_in(&events);
        assert_eq!(
            reports,
            [("High".to_owned(), 20, 15), ("Low".to_owned(), 20, 20)]
        );
        assert_eq!(named(&events, "Diagnostic").len(), 5);
    }

    /// With an output name (`edgehub.output_name`), the size cap reserves its
    /// `iothub-outputname` pair too, and keeps it across a new configuration.
    #[test]
    fn an_output_name_is_reserved_in_the_size_cap() {
        let mut o = outgoing(1_000_000);
        let base = o.batcher.config().app_properties_bytes;
        assert_eq!(base, properties::bytes(o.config(), None));
        o.set_output_name(Some("security".into()));
        let with = base + "iothub-outputname".len() + "security".len() + 10;
        assert_eq!(o.properties_bytes(), with);
        assert_eq!(o.batcher.config().app_properties_bytes, with);
        let mut c = o.config().clone();
        c.max_message_size_in_bytes = 4_096;
        o.set_config(c, 1_000);
        assert_eq!(o.batcher.config().app_properties_bytes, with);
        assert_eq!(o.batcher.config().body_limit(), 4_096 - with);
    }

    /// A smaller maxMessageSizeInBytes: the message already built stays as it is; the next
    /// ones are built under the new size, properties counted; nothing is lost.
    #[test]
    fn a_smaller_message_size_applies_to_the_next_messages_built() {
        let mut o = outgoing(1_000_000);
        for n in 0..20 {
            o.push(process(n), 0);
        }
        o.tick(1_000, 1_000, UpstreamDrops::default()).unwrap();
        let first = o.next_message().unwrap().unwrap();
        assert!(first.body.len() > 4_096, "{}", first.body.len());
        for n in 20..40 {
            o.push(process(n), 1_200);
        }
        let mut smaller = o.config().clone();
        smaller.max_message_size_in_bytes = 4_096;
        smaller.hub_resource_id = Some("/subscriptions/s/resourceGroups/rg/hub".into());
        o.set_config(smaller, 1_500);
        let limit = 4_096 - properties::bytes(o.config(), None);
        assert_eq!(
            o.batcher.config().app_properties_bytes,
            properties::bytes(o.config(), None)
        );
        assert_eq!(o.batcher.config().body_limit(), limit);
        o.tick(2_000, 2_000, UpstreamDrops::default()).unwrap();
        assert_eq!(
            o.next_message().unwrap().unwrap(),
            first,
            "built before: unchanged"
        );
        o.sent(&first).unwrap();
        let rest = drain(&mut o, 3_000, 8_000);
        // 20 events of over 300 bytes: more than one message under 4 KB.
        assert!(rest.len() >= 2, "{}", rest.len());
        for m in &rest {
            assert!(m.body.len() <= limit, "{} > {limit}", m.body.len());
        }
        let n = events_of(&first).len()
            + rest
                .iter()
                .map(|m| named(&events_of(m), "ProcessCreate").len())
                .sum::<usize>();
        assert_eq!(n, 40);
    }

    /// snapshotFrequency applies from the period in progress: longer, the next snapshot
    /// waits for it; shorter, it comes at the next tick past it.
    #[test]
    fn the_next_statistics_period_uses_the_new_snapshot_frequency() {
        let mut o = outgoing(1_000_000);
        let mut longer = o.config().clone();
        longer.snapshot_frequency = Duration::from_secs(60);
        o.set_config(longer, 5_000);
        let snapshots = |o: &mut Outgoing, from, to| {
            let events: Vec<_> = drain(o, from, to).iter().flat_map(events_of).collect();
            named(&events, "MessageStatistics").len()
        };
        assert_eq!(snapshots(&mut o, 6_000, 59_000), 0, "not due under 60 s");
        assert_eq!(snapshots(&mut o, 60_000, 60_000), 1);
        let mut shorter = o.config().clone();
        shorter.snapshot_frequency = Duration::from_secs(2);
        o.set_config(shorter, 61_000);
        assert_eq!(snapshots(&mut o, 62_000, 62_000), 1);
        assert_eq!(snapshots(&mut o, 63_000, 63_000), 0);
        assert_eq!(snapshots(&mut o, 64_000, 64_000), 1);
    }

    /// A window closed by an event between two ticks, then an acknowledgement's commit: the
    /// checkpoint is replaced first, so a kill right after brings back the next window's
    /// entry, not the closed window's a second time.
    #[test]
    fn a_window_closed_between_ticks_is_not_restored_twice_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let none = UpstreamDrops::default();
        {
            let mut o = outgoing_on(&path, 1_000_000);
            let mut c = aggregating(o.config(), 10);
            c.snapshot_frequency = Duration::from_secs(3_600);
            o.set_config(c, 0);
            o.push(diagnostic(1), 0);
            o.push(process(1), 0);
            o.tick(1_000, 1_000, none).unwrap();
            let waiting = o.next_message().unwrap().unwrap();
            o.tick(5_000, 5_000, none).unwrap(); // the checkpoint: process(1)'s entry
            o.push(process(2), 10_500); // closes the window, opens the next
            o.sent(&waiting).unwrap(); // commits
        } // killed
        let mut o = outgoing_on(&path, 1_000_000);
        o.flush().unwrap();
        let mut pids = Vec::new();
        while let Some(m) = o.next_message().unwrap() {
            for e in events_of(&m) {
                pids.push(e["Payload"][0]["ProcessId"].as_i64().unwrap());
            }
            o.sent(&m).unwrap();
        }
        assert_eq!(pids, [1001, 1002]);
    }
}

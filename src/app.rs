//! Wiring of `run` and `replay`: the tasks, the channels between them, and shutdown.
//!
//! `run`: a socket-reader task drains auditd's af_unix socket into a byte-bounded
//! [`LineQueue`] (dropping and counting there when the pipeline falls behind, never leaving
//! data in auditd's socket), and the pipeline task turns the lines into security events and
//! hands them to the sink. `replay` feeds the same [`Pipeline`] from a file, taking time from
//! the records, so the same input always gives the same events.
//!
//! `run` owns its tasks ([`Supervised`]): one that ends while the module runs ends the run
//! with [`AppError::TaskEnded`] after the usual flush. Printing goes through a [`Printer`]
//! thread, so a stdout nobody reads never holds the loop (or the stop).

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Notify;

use uuid::Uuid;

use crate::audit::source::{self, Chunk, LineQueue, SourceStats};
use crate::config::agent::AgentConfig;
use crate::config::settings::Settings;
use crate::config::stages;
use crate::config::twin::{DesiredState, Step, load_kept};
use crate::edge::amqp::backoff::random_unit;
use crate::edge::amqp::{AmqpConfig, AmqpStats, Client, Control};
use crate::edge::credentials::Credentials;
use crate::events::operational::DiagnosticSeverity;
use crate::events::{ConfigurationError, Payload, SecurityEvent};
use crate::outbox::fallback::Resilient;
use crate::outbox::sqlite::{self, Recovery};
use crate::outbox::{MemoryStore, Store, StoreError};
use crate::outgoing::batch::Envelope;
use crate::outgoing::owner::{self, Feeder};
use crate::outgoing::{Outgoing, UpstreamDrops, diagnostic_event};
use crate::pipeline::{Pipeline, PipelineStats};
use crate::stats::{self, Snapshot};
use crate::twin::{Machine, TwinTask, TwinTaskStats};

#[derive(Debug, Error)]
pub enum AppError {
    #[error("reading the audit log: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
    #[error("serializing an event: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    TaskEnded(#[from] TaskEnded),
    #[error("starting the outgoing state's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A long-running task of `run` (the socket reader, the AMQP sender, the twin task, the
/// metrics server).
/// None of them ends on its own while the module runs, so one that does (a panic, or a
/// return) ends the module: [`first_ended`] tells `run`, which logs E-TASK-ENDED, flushes
/// what is in flight and returns [`AppError::TaskEnded`], and the process exits non-zero so
/// that the runtime (IoT Edge) restarts it, instead of a module that stays up and never
/// sends again.
pub struct Supervised {
    pub name: &'static str,
    handle: tokio::task::JoinHandle<()>,
    /// Its end was taken by [`first_ended`] (a `JoinHandle` must not be polled again).
    ended: bool,
}

/// Why a supervised task ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the {task} task ended: {why}")]
pub struct TaskEnded {
    pub task: &'static str,
    pub why: String,
}

impl Supervised {
    pub fn spawn<F>(name: &'static str, task: F) -> Supervised
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        Supervised::watch(name, tokio::spawn(task))
    }

    /// A task spawned elsewhere (the metrics server).
    pub fn watch(name: &'static str, handle: tokio::task::JoinHandle<()>) -> Supervised {
        Supervised {
            name,
            handle,
            ended: false,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.ended || self.handle.is_finished()
    }

    pub fn abort(&self) {
        self.handle.abort();
    }

    /// Wait for its end (at shutdown, after it was told to stop).
    pub async fn join(&mut self) {
        if !self.ended {
            self.ended = true;
            let _ = (&mut self.handle).await;
        }
    }
}

/// The first of `tasks` to end and why; pending for as long as none does (for ever when
/// `tasks` is empty). A task whose end was reported is not watched again.
pub async fn first_ended<'a>(tasks: impl IntoIterator<Item = &'a mut Supervised>) -> TaskEnded {
    use std::future::Future;
    use std::task::Poll;
    let mut tasks: Vec<&mut Supervised> = tasks.into_iter().filter(|t| !t.ended).collect();
    std::future::poll_fn(|cx| {
        for t in tasks.iter_mut() {
            if let Poll::Ready(r) = std::pin::Pin::new(&mut t.handle).poll(cx) {
                t.ended = true;
                let why = match r {
                    Ok(()) => "it returned".to_owned(),
                    Err(e) if e.is_panic() => {
                        let p = e.into_panic();
                        let text = p
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic without a message".to_owned());
                        format!("it panicked: {text}")
                    }
                    Err(_) => "it was cancelled".to_owned(),
                };
                return Poll::Ready(TaskEnded { task: t.name, why });
            }
        }
        Poll::Pending
    })
    .await
}

/// `debug.panic_task`: the named task panics after `debug.panic_task_after_ms` (test knob).
fn with_fault<F>(
    settings: &Settings,
    name: &'static str,
    task: F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let after = (settings.debug.panic_task == name)
        .then(|| Duration::from_millis(settings.debug.panic_task_after_ms));
    async move {
        match after {
            None => task.await,
            Some(after) => {
                tokio::select! {
                    _ = task => {}
                    _ = tokio::time::sleep(after) => panic!("debug.panic_task: the {name} task was made to fail"),
                }
            }
        }
    }
}

/// What `run` and `replay` produce.
#[derive(Clone)]
pub enum Mode {
    /// One security event per line, as derived (before aggregation).
    Events,
    /// The security messages as they would be sent, one per line.
    Messages { agent_id: Uuid },
    /// The security messages, sent to edgeHub (or IoT Hub) over AMQP.
    Send {
        agent_id: Uuid,
        credentials: Arc<Credentials>,
        amqp: AmqpConfig,
        /// On stop: how long to keep sending what is ready.
        grace: Duration,
    },
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Events => f.write_str("Events"),
            Mode::Messages { agent_id } => write!(f, "Messages({agent_id})"),
            Mode::Send { agent_id, .. } => write!(f, "Send({agent_id})"),
        }
    }
}

impl Mode {
    fn agent_id(&self) -> Option<Uuid> {
        match self {
            Mode::Events => None,
            Mode::Messages { agent_id } | Mode::Send { agent_id, .. } => Some(*agent_id),
        }
    }
}

/// The agent configuration in force: the settings' `[agent]`, and the try-out overrides.
/// Problems are logged and returned as ConfigurationError payloads.
pub fn agent_config(settings: &Settings) -> (AgentConfig, Vec<ConfigurationError>) {
    let applied = settings.agent_config();
    for e in &applied.errors {
        tracing::warn!(
            error_id = "W-CONFIG",
            setting = %e.configuration_name,
            error = ?e.error_type,
            message = %e.message,
            "agent configuration problem"
        );
    }
    if settings.module.tryout {
        tracing::warn!(
            error_id = "W-TRYOUT",
            "try-out mode: messages every 10 s (high) and 20 s (low), statistics every 30 s, aggregation windows of 15 s"
        );
    }
    (applied.config, applied.errors)
}

/// Writes events, or builds messages. In the printing message modes it owns the outgoing
/// state (aggregation, store, batching) and writes each message as it is built and
/// acknowledges it. Sending, it only makes the outgoing state, which `run` hands to its
/// owner thread ([`crate::outgoing::owner`]).
pub struct Emitter<W: Write> {
    out: W,
    buf: Vec<u8>,
    mode: Mode,
    settings: Settings,
    outgoing: Option<Outgoing>,
    /// What opening the store had to say, as a Diagnostic event.
    store_diagnostic: Option<(DiagnosticSeverity, String)>,
    /// `out` said WouldBlock (a [`Printer`] whose reader does not read): said once.
    out_blocked: bool,
    /// `--events`: events dropped because `out` was full.
    unprinted_events: u64,
    /// Sending with the twin: the desired state the outgoing state started from, for the
    /// twin task to own.
    desired: Option<DesiredState>,
}

impl<W: Write> Emitter<W> {
    pub fn new(settings: &Settings, mode: Mode, out: W) -> Self {
        Emitter {
            out,
            buf: Vec::with_capacity(4096),
            mode,
            settings: settings.clone(),
            outgoing: None,
            store_diagnostic: None,
            out_blocked: false,
            unprinted_events: 0,
            desired: None,
        }
    }

    /// The outgoing state, taken away to run on its owner thread (sending).
    pub fn take_outgoing(&mut self, now_ms: u64, wall_ms: u64) -> Option<Outgoing> {
        self.ensure_outgoing(now_ms, wall_ms);
        self.outgoing.take()
    }

    /// The desired state the outgoing state started from (sending with the twin), taken
    /// away for the twin task.
    pub fn take_desired(&mut self) -> Option<DesiredState> {
        self.desired.take()
    }

    /// Sending with the twin: the settings' layers with the desired configuration kept in
    /// the data directory on top, so that a restart while edgeHub is away starts with the
    /// cloud's configuration. A kept file that cannot be read is logged and ignored.
    fn restore_desired(&mut self) -> AgentConfig {
        let mut state = DesiredState::from_settings(&self.settings);
        let dir = &self.settings.module.data_dir;
        match load_kept(dir) {
            Ok(None) => {}
            Ok(Some(kept)) => {
                let version = kept.version;
                match state.restore(kept) {
                    Step::Rejected { errors } => tracing::warn!(
                        error_id = "W-TWIN-KEPT",
                        dir = %dir.display(),
                        version,
                        first = %errors.first().map(|e| e.message.as_str()).unwrap_or(""),
                        "the kept desired configuration was rejected: starting from the settings"
                    ),
                    step => tracing::info!(
                        version,
                        changed = matches!(step, Step::Applied { .. }),
                        "the desired configuration kept from the twin is in force until edgeHub answers"
                    ),
                }
            }
            Err(e) => tracing::warn!(
                error_id = "W-TWIN-KEPT",
                dir = %dir.display(),
                error = %e,
                "the kept desired configuration cannot be read: ignored, starting from the settings"
            ),
        }
        let config = state.config().clone();
        self.desired = Some(state);
        config
    }

    /// Makes the outgoing half if this mode has one and it is not made yet.
    fn ensure_outgoing(&mut self, now_ms: u64, wall_ms: u64) {
        let Some(agent_id) = self.mode.agent_id() else {
            return;
        };
        if self.outgoing.is_none() {
            let (config, errors) = agent_config(&self.settings);
            let config = match self.mode {
                Mode::Send { .. } if self.settings.edgehub.twin => self.restore_desired(),
                _ => config,
            };
            let cache = usize::try_from(config.max_local_cache_size_in_bytes).unwrap_or(usize::MAX);
            let store = self.store(cache);
            let durable = matches!(self.mode, Mode::Send { .. });
            let mut o = Outgoing::new(
                config,
                Envelope::new(agent_id, env!("CARGO_PKG_VERSION")),
                store,
                self.settings.module.aggregation_max_entries,
                now_ms,
            );
            if durable {
                o.set_run_salt(Uuid::new_v4());
                // The telemetry link adds `iothub-outputname` to every message: the size cap
                // reserves it.
                let output = &self.settings.edgehub.output_name;
                o.set_output_name((!output.is_empty()).then(|| output.clone()));
            }
            if let Some((severity, message)) = self.store_diagnostic.take() {
                o.push(diagnostic_event(severity, message, wall_ms), now_ms);
            }
            if !errors.is_empty() {
                o.push(
                    SecurityEvent {
                        id: Uuid::new_v5(&agent_id, b"ConfigurationError at start"),
                        time_ms: wall_ms,
                        payload: Payload::ConfigurationError(errors),
                    },
                    now_ms,
                );
            }
            self.outgoing = Some(o);
        }
    }

    /// The store: the durable outbox in the data directory when sending, memory when
    /// printing. An outbox that cannot be opened (a read-only or full data directory) leaves
    /// the module forwarding from memory, and says so.
    fn store(&mut self, cache: usize) -> Box<dyn Store + Send> {
        if !matches!(self.mode, Mode::Send { .. }) {
            return Box::new(MemoryStore::new(cache));
        }
        let dir = &self.settings.module.data_dir;
        match sqlite::open_or_recover(dir, cache) {
            Ok((store, Recovery::Clean)) => {
                tracing::info!(path = %store.path().display(), messages = store.message_count(), bytes = store.bytes(), restored_window_events = store.restored_window_events(), "outbox opened");
                let q = store.quarantined();
                if !q.is_empty() {
                    let first = q.first.clone().unwrap_or_default();
                    tracing::error!(
                        error_id = "E-OUTBOX-ROW-BAD",
                        path = %store.path().display(),
                        events_high = q.events.high,
                        events_low = q.events.low,
                        messages = q.messages,
                        %first,
                        "rows of the outbox did not decode: removed (events counted as dropped, messages as failed); the rest is sent"
                    );
                    self.store_diagnostic = Some((
                        DiagnosticSeverity::Error,
                        format!(
                            "E-OUTBOX-ROW-BAD: {} High and {} Low events and {} messages of the outbox did not decode and were removed (first: {first})",
                            q.events.high, q.events.low, q.messages
                        ),
                    ));
                }
                Box::new(Resilient::new(store))
            }
            Ok((store, Recovery::MovedAside { moved_to, reason })) => {
                tracing::error!(
                    error_id = "E-OUTBOX-CORRUPT",
                    moved_to = %moved_to.display(),
                    %reason,
                    "the outbox was corrupt: it was moved aside and the module starts with an empty one; what it held is not sent"
                );
                self.store_diagnostic = Some((
                    DiagnosticSeverity::Error,
                    format!(
                        "E-OUTBOX-CORRUPT: the outbox was corrupt ({reason}); it was moved to {} and the module started with an empty one",
                        moved_to.display()
                    ),
                ));
                Box::new(Resilient::new(store))
            }
            Err(e) => {
                tracing::error!(
                    error_id = "E-OUTBOX-UNAVAILABLE",
                    dir = %dir.display(),
                    error = %e,
                    "cannot open the outbox: forwarding from memory (a restart loses what is queued)"
                );
                self.store_diagnostic = Some((
                    DiagnosticSeverity::Error,
                    format!(
                        "E-OUTBOX-UNAVAILABLE: cannot open the outbox in {} ({e}); forwarding from memory",
                        dir.display()
                    ),
                ));
                Box::new(MemoryStore::new(cache))
            }
        }
    }

    /// A derived security event.
    pub fn event(&mut self, ev: SecurityEvent, now_ms: u64, wall_ms: u64) -> Result<(), AppError> {
        self.ensure_outgoing(now_ms, wall_ms);
        match &mut self.outgoing {
            Some(o) => {
                o.push(ev, now_ms);
                Ok(())
            }
            None => match write_event(&mut self.buf, &ev, &mut self.out) {
                // `--events` has no store to keep it in: dropped, counted, said at stop.
                Err(AppError::Write(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.unprinted_events += 1;
                    self.blocked();
                    Ok(())
                }
                r => r,
            },
        }
    }

    /// Time passes: windows, statistics and messages that are due.
    pub fn tick(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        upstream: UpstreamDrops,
    ) -> Result<(), AppError> {
        let Some(o) = &mut self.outgoing else {
            return Ok(());
        };
        o.tick(now_ms, wall_ms, upstream)?;
        self.drain()
    }

    /// The end: the last statistics period, every window and pending event into messages.
    pub fn finish(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        upstream: UpstreamDrops,
    ) -> Result<(), AppError> {
        // What is pending goes first, so that the last statistics count it as sent.
        self.ensure_outgoing(now_ms, wall_ms);
        if let Some(o) = &mut self.outgoing {
            o.flush()?;
        }
        self.drain()?;
        if let Some(o) = &mut self.outgoing {
            o.snapshot(wall_ms, upstream);
            o.flush()?;
        }
        self.drain()?;
        match self.out.flush() {
            // A Printer still printing: [`Emitter::settle`] waits for it.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            r => r.map_err(AppError::Write),
        }
    }

    /// At stop, printing: print what is left; true when everything is out (the store empty
    /// and `out` flushed), false while a full `out` holds some back.
    pub fn settle(&mut self) -> Result<bool, AppError> {
        self.drain()?;
        match self.out.flush() {
            Ok(()) => Ok(self.queued().0 == 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(AppError::Write(e)),
        }
    }

    /// What a full `out` kept from being printed: messages still in the store, events
    /// dropped (`--events`).
    pub fn unprinted(&self) -> (usize, u64) {
        (self.queued().0, self.unprinted_events)
    }

    fn blocked(&mut self) {
        blocked(&mut self.out_blocked);
    }

    fn drain(&mut self) -> Result<(), AppError> {
        let Some(o) = &mut self.outgoing else {
            return Ok(());
        };
        while let Some(m) = o.next_message()? {
            // One write per line: a Printer takes all of it or none.
            self.buf.clear();
            self.buf.extend_from_slice(m.body.as_bytes());
            self.buf.push(b'\n');
            match self.out.write_all(&self.buf) {
                Ok(()) => o.sent(&m)?,
                // Full: the message stays in the store (under its cap) for the next tick.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    blocked(&mut self.out_blocked);
                    return Ok(());
                }
                Err(e) => return Err(AppError::Write(e)),
            }
        }
        Ok(())
    }

    /// Messages waiting and bytes held by the store (0 when printing events).
    pub fn queued(&self) -> (usize, usize) {
        self.outgoing.as_ref().map(|o| o.queued()).unwrap_or((0, 0))
    }

    /// The outgoing half's part of the counters snapshot (message modes; nothing when
    /// printing events).
    pub fn fill(&self, s: &mut Snapshot) {
        if let Some(o) = &self.outgoing {
            o.fill(s);
        }
    }
}

/// `out` is full: said once (`said` remembers).
fn blocked(said: &mut bool) {
    if !*said {
        *said = true;
        tracing::warn!(
            error_id = "W-STDOUT-BLOCKED",
            "stdout is not being read: messages wait in memory (with --events, events are dropped) until it is"
        );
    }
}

/// The most bytes of JSON one snapshot event may have so that a message holds it: the body
/// limit of the agent configuration (`maxMessageSizeInBytes`, edgeHub's limit, the
/// application properties with `output` among them) less the envelope, as the outgoing
/// state measures it.
pub fn snapshot_event_limit(config: &AgentConfig, output: Option<&str>) -> usize {
    let body =
        crate::config::stages::batch(config, crate::outgoing::properties::bytes(config, output))
            .body_limit();
    body.saturating_sub(Envelope::new(Uuid::nil(), env!("CARGO_PKG_VERSION")).overhead())
}

/// Replay audit.log text: security events or messages, one per line on `out`, with time
/// taken from the records.
pub fn replay<R: BufRead, W: Write>(
    settings: &Settings,
    input: R,
    out: W,
    mode: Mode,
) -> Result<PipelineStats, AppError> {
    let mut pipeline = Pipeline::new(settings);
    let mut events = Vec::new();
    let mut emitter = Emitter::new(settings, mode, out);
    let mut clock = 0u64;
    let mut err = None;
    let mut emit = |events: &mut Vec<SecurityEvent>,
                    emitter: &mut Emitter<W>,
                    pipeline: &Pipeline,
                    clock: &mut u64| {
        for ev in events.drain(..) {
            *clock = (*clock).max(ev.time_ms);
            if err.is_none() {
                err = emitter.event(ev, *clock, *clock).err();
            }
        }
        if err.is_none() && *clock > 0 {
            err = emitter
                .tick(*clock, *clock, pipeline.upstream_drops())
                .err();
        }
    };
    let oversized = source::read_lines(input, settings.audit.max_line_bytes, |line| {
        pipeline.push_line(line, 0, &mut events);
        if !events.is_empty() {
            emit(&mut events, &mut emitter, &pipeline, &mut clock);
        }
    })
    .map_err(AppError::Read)?;
    pipeline.flush(&mut events);
    emit(&mut events, &mut emitter, &pipeline, &mut clock);
    if let Some(e) = err {
        return Err(e);
    }
    emitter.finish(clock, clock, pipeline.upstream_drops())?;
    if oversized > 0 {
        tracing::warn!(
            error_id = "W-AUDIT-LONGLINE",
            lines = oversized,
            "over-long lines skipped"
        );
    }
    Ok(pipeline.stats())
}

/// Write one event as a JSON line (serialized first, so that an I/O error stays an I/O error).
pub fn write_event<W: Write>(
    buf: &mut Vec<u8>,
    ev: &SecurityEvent,
    out: &mut W,
) -> Result<(), AppError> {
    buf.clear();
    serde_json::to_writer(&mut *buf, ev)?;
    buf.push(b'\n');
    out.write_all(buf).map_err(AppError::Write)
}

/// stdout of `run`'s printing modes, written by a thread of its own: a reader that does
/// not read (a full pipe) blocks that thread only, so the pipeline keeps ticking and a
/// signal still stops the module. A write takes the whole buffer or, when `cap` bytes are
/// already waiting, nothing (WouldBlock): the [`Emitter`] then keeps the message in its
/// store (or, `--events`, drops and counts the event). `flush` is WouldBlock while lines
/// wait. A write error of the thread (EPIPE: the reader went away) is returned by the next
/// write; the thread ends with it.
#[derive(Clone)]
pub struct Printer {
    shared: Arc<(Mutex<PrintQueue>, std::sync::Condvar)>,
}

struct PrintQueue {
    lines: std::collections::VecDeque<Vec<u8>>,
    /// Bytes in `lines` plus the line being written.
    bytes: usize,
    cap: usize,
    error: Option<std::io::ErrorKind>,
}

impl Printer {
    /// Start the thread writing to `out`, holding up to `cap` bytes.
    pub fn start<W: Write + Send + 'static>(mut out: W, cap: usize) -> std::io::Result<Printer> {
        let shared = Arc::new((
            Mutex::new(PrintQueue {
                lines: std::collections::VecDeque::new(),
                bytes: 0,
                cap,
                error: None,
            }),
            std::sync::Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let (queue, ready) = &*s;
                loop {
                    let line = {
                        let Ok(mut q) = queue.lock() else { return };
                        loop {
                            if let Some(line) = q.lines.pop_front() {
                                break line;
                            }
                            q = match ready.wait(q) {
                                Ok(q) => q,
                                Err(_) => return,
                            };
                        }
                    };
                    let r = out.write_all(&line).and_then(|()| out.flush());
                    let Ok(mut q) = queue.lock() else { return };
                    q.bytes = q.bytes.saturating_sub(line.len());
                    if let Err(e) = r {
                        q.error = Some(e.kind());
                        return;
                    }
                }
            })?;
        Ok(Printer { shared })
    }

    /// Lines waiting and their bytes (the line being written counts in the bytes).
    pub fn pending(&self) -> (usize, usize) {
        self.shared
            .0
            .lock()
            .map(|q| (q.lines.len(), q.bytes))
            .unwrap_or((0, 0))
    }
}

impl Write for Printer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (queue, ready) = &*self.shared;
        let mut q = queue
            .lock()
            .map_err(|_| std::io::Error::other("the stdout thread failed"))?;
        if let Some(kind) = q.error {
            return Err(kind.into());
        }
        // One line larger than the cap still goes when nothing waits.
        if q.bytes > 0 && q.bytes.saturating_add(buf.len()) > q.cap {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        q.bytes = q.bytes.saturating_add(buf.len());
        q.lines.push_back(buf.to_vec());
        ready.notify_one();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let q = self
            .shared
            .0
            .lock()
            .map_err(|_| std::io::Error::other("the stdout thread failed"))?;
        match q.error {
            Some(kind) => Err(kind.into()),
            None if q.bytes > 0 => Err(std::io::ErrorKind::WouldBlock.into()),
            None => Ok(()),
        }
    }
}

/// `t + d`, checked: an `Instant` that cannot carry `d` (the settings bound every duration,
/// so only a clock at its end) gives `t`, i.e. "now" rather than a panic.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// How often idle events are completed and held logins expired.
const TICK: Duration = Duration::from_millis(100);
/// How often the statistics line is logged.
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Run on the live socket until `shutdown` is notified; events go to `sink`.
pub async fn run<W: Write + Send + 'static>(
    settings: Settings,
    shutdown: Arc<Notify>,
    mode: Mode,
    out: W,
) -> Result<PipelineStats, AppError> {
    let mut emitter = Emitter::new(&settings, mode.clone(), out);
    let wall_ms = || u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let start = Instant::now();
    let now_ms = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut sender = start_sender(&mut emitter, &mode, &settings, start, wall_ms())?;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let mut metrics_task = if settings.metrics.enabled {
        start_metrics(&settings.metrics.listen, snapshot.clone()).await
    } else {
        None
    };
    let mut counters_at = Instant::now();
    let queue = LineQueue::new(settings.audit.queue_max_bytes);
    let source_stats = Arc::new(SourceStats::default());
    let stop_reader = Arc::new(Notify::new());
    let mut reader = Supervised::spawn(
        "reader",
        with_fault(
            &settings,
            "reader",
            source::read_socket(
                stages::source(&settings.audit),
                queue.clone(),
                source_stats.clone(),
                stop_reader.clone(),
            ),
        ),
    );

    let mut pipeline = Pipeline::new(&settings);
    let mut events = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_at = later(Instant::now(), STATS_EVERY);
    let rules_warn_ms = settings.audit.rules_warning_after_secs.saturating_mul(1000);
    let mut rules_warned = false;
    let mut pause = (settings.debug.pause_pipeline_ms > 0).then(|| {
        (
            later(
                start,
                Duration::from_millis(settings.debug.pause_pipeline_after_ms),
            ),
            Duration::from_millis(settings.debug.pause_pipeline_ms),
        )
    });
    let result: Result<(), AppError> = async {
        loop {
            if let Some((at, len)) = pause {
                if Instant::now() >= at {
                    pause = None;
                    tracing::warn!(ms = len.as_millis() as u64, "debug: pipeline paused (the reader keeps draining)");
                    tokio::select! {
                        _ = tokio::time::sleep(len) => {}
                        _ = shutdown.notified() => return Ok(()),
                    }
                    tracing::warn!("debug: pipeline resumed");
                }
            }
            tokio::select! {
                chunk = queue.pop() => {
                    let Some(chunk) = chunk else { return Ok(()) };
                    feed(&mut pipeline, chunk, now_ms(), &mut events);
                }
                _ = ticker.tick() => {
                    pipeline.tick(now_ms(), &mut events);
                    if !rules_warned && rules_warn_ms > 0 {
                        let quiet = pipeline.ms_without_rule_key(now_ms()).unwrap_or(now_ms());
                        if quiet >= rules_warn_ms {
                            rules_warned = true;
                            tracing::warn!(
                                error_id = "W-RULES-MISSING",
                                minutes = rules_warn_ms / 60_000,
                                "no audit event with the key azureiotsecurity arrived: the module's audit rules may not be loaded. Load them as root with: azureiotsecurity rules > /tmp/r && auditctl -R /tmp/r (auditctl -R fails silently on a pipe)"
                            );
                        }
                    }
                    if Instant::now() >= counters_at {
                        counters_at = later(Instant::now(), Duration::from_secs(1));
                        let c = collect(&pipeline, &source_stats, &queue, &emitter, sender.as_ref());
                        if let Ok(mut shared) = snapshot.lock() {
                            *shared = c.clone();
                        }
                        if Instant::now() >= stats_at {
                            stats_at = later(Instant::now(), STATS_EVERY);
                            c.log();
                        }
                    }
                }
                _ = shutdown.notified() => return Ok(()),
                ended = first_ended(
                    std::iter::once(&mut reader)
                        .chain(sender.as_mut().into_iter().flat_map(|s| {
                            [Some(&mut s.task), Some(&mut s.owner), s.twin.as_mut().map(|t| &mut t.task)]
                                .into_iter()
                                .flatten()
                        }))
                        .chain(metrics_task.as_mut()),
                ) => return Err(task_ended(ended)),
            }
            let now = now_ms();
            match sender.as_mut() {
                // Sending: the pipeline only hands commands to the owner thread.
                Some(s) => {
                    let up = upstream(&pipeline, &source_stats);
                    let fed = match s.feeder.events(std::mem::take(&mut events), now).await {
                        Ok(()) => s.feeder.tick(now, wall_ms(), up).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = fed {
                        return Err(s.owner_failed(e).await);
                    }
                }
                None => {
                    for ev in events.drain(..) {
                        emitter.event(ev, now, wall_ms())?;
                    }
                    emitter.tick(now, wall_ms(), upstream(&pipeline, &source_stats))?;
                }
            }
        }
    }
    .await;
    // Shutdown: stop reading, finish what was read, flush what is in flight.
    stop_reader.notify_one();
    reader.join().await;
    while let Some(chunk) = queue.try_pop() {
        feed(&mut pipeline, chunk, now_ms(), &mut events);
    }
    pipeline.flush(&mut events);
    let now = now_ms();
    let up = upstream(&pipeline, &source_stats);
    let finished = match sender.as_mut() {
        Some(s) => match s.feeder.events(std::mem::take(&mut events), now).await {
            Ok(()) => s.feeder.finish(wall_ms(), up).await.map_err(AppError::from),
            Err(e) => Err(e.into()),
        },
        None => events
            .drain(..)
            .try_for_each(|ev| emitter.event(ev, now, wall_ms()))
            .and_then(|()| emitter.finish(now, wall_ms(), up)),
    };
    if let Err(e) = finished {
        if result.is_ok() {
            return Err(e);
        }
        // The run is ending for another reason already (the owner thread's end, say).
        tracing::error!(error_id = "E-STORE-REFUSED", error = %e, "the final flush failed: what was in flight is not in the outbox");
    }
    if let Some(s) = sender.as_mut() {
        s.finish().await;
        s.stop_owner().await;
    } else {
        // Printing: keep printing for the grace, then say what a stdout that is not read
        // kept back (printing has no outbox: it is lost).
        let grace = Duration::from_millis(settings.edgehub.shutdown_grace_ms);
        let until = later(Instant::now(), grace);
        while !emitter.settle()? && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (messages, events) = emitter.unprinted();
        if messages > 0 || events > 0 {
            tracing::warn!(
                error_id = "W-STDOUT-BLOCKED",
                messages,
                events,
                "stopping with output not printed: stdout was not read; it is lost"
            );
        }
    }
    if let Some(t) = &metrics_task {
        t.abort();
    }
    // The final statistics line, with what the stop flushed and sent.
    collect(&pipeline, &source_stats, &queue, &emitter, sender.as_ref()).log();
    result?;
    Ok(pipeline.stats())
}

/// E-TASK-ENDED: a task of the module ended while it runs.
fn task_ended(ended: TaskEnded) -> AppError {
    tracing::error!(
        error_id = "E-TASK-ENDED",
        task = ended.task,
        why = %ended.why,
        "a task of the module ended: stopping (flushing what is in flight) so that the runtime restarts the module"
    );
    ended.into()
}

/// How long the stop waits for the owner thread to end once told to.
const OWNER_STOP: Duration = Duration::from_secs(10);

/// The AMQP sender task of `Mode::Send`, and the owner thread of the outgoing state it
/// sends from.
struct RunningSender {
    control: tokio::sync::watch::Sender<Control>,
    task: Supervised,
    stats: Arc<AmqpStats>,
    grace: Duration,
    /// The pipeline's side of the owner thread.
    feeder: Feeder,
    /// The owner thread's end, supervised like the tasks.
    owner: Supervised,
    /// The twin task (`edgehub.twin`).
    twin: Option<RunningTwin>,
}

/// The twin task of `Mode::Send` and its counters.
struct RunningTwin {
    task: Supervised,
    stats: Arc<TwinTaskStats>,
}

impl RunningSender {
    /// Send what is ready until the grace period ends, then close the connection.
    async fn finish(&self) {
        let deadline = later(Instant::now(), self.grace);
        let _ = self.control.send(Control::Finish { deadline });
        // The client stops itself at the deadline; the margin covers a clean close.
        let limit = tokio::time::Instant::from_std(later(deadline, Duration::from_secs(2)));
        while !self.task.is_finished() && tokio::time::Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        // The twin links went with the connection; a change the twin task is handing over
        // now would come after the final flush: it ends here.
        if let Some(t) = &self.twin {
            t.task.abort();
        }
    }

    /// The owner thread refused a command: when it has ended, that end is the reason
    /// (E-TASK-ENDED, as for a task), else the store's error.
    async fn owner_failed(&mut self, e: StoreError) -> AppError {
        let ended =
            tokio::time::timeout(Duration::from_secs(1), first_ended([&mut self.owner])).await;
        match ended {
            Ok(ended) => task_ended(ended),
            Err(_) => e.into(),
        }
    }

    /// After the sender's grace: the owner thread ends (everything it holds is committed).
    async fn stop_owner(&mut self) {
        self.feeder.handle().shutdown().await;
        let _ = tokio::time::timeout(OWNER_STOP, self.owner.join()).await;
    }
}

fn start_sender<W: Write>(
    emitter: &mut Emitter<W>,
    mode: &Mode,
    settings: &Settings,
    start: Instant,
    wall_ms: u64,
) -> Result<Option<RunningSender>, AppError> {
    let Mode::Send {
        agent_id,
        credentials,
        amqp,
        grace,
    } = mode
    else {
        return Ok(None);
    };
    let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let Some(outgoing) = emitter.take_outgoing(now_ms, wall_ms) else {
        return Ok(None);
    };
    let wake = Arc::new(Notify::new());
    let owner = owner::spawn(outgoing, wake.clone()).map_err(AppError::Thread)?;
    if settings.debug.panic_task == "owner" {
        let after = Duration::from_millis(settings.debug.panic_task_after_ms);
        let handle = owner.handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            handle.fail().await;
        });
    }
    // The twin links beside telemetry, and the task that owns the desired state.
    let (twin_service, twin) = match emitter.take_desired() {
        Some(state) => {
            let (service, handle, events, service_stats) =
                crate::edge::amqp::twin::service(amqp.request_timeout, TWIN_EVENTS);
            let stats = Arc::new(TwinTaskStats::new(service_stats));
            let task = TwinTask {
                machine: Machine::new(
                    state,
                    *agent_id,
                    env!("CARGO_PKG_VERSION"),
                    amqp.reconnect_min,
                    amqp.reconnect_max,
                    random_unit,
                ),
                twin: handle,
                events,
                owner: owner.handle.clone(),
                stats: stats.clone(),
                data_dir: settings.module.data_dir.clone(),
                start,
            };
            let running = RunningTwin {
                task: Supervised::spawn("twin", with_fault(settings, "twin", task.run())),
                stats,
            };
            (Some(service), Some(running))
        }
        None => (None, None),
    };
    let outbox = Arc::new(owner.handle);
    let stats = Arc::new(AmqpStats::default());
    let (control, control_rx) = tokio::sync::watch::channel(Control::Run);
    let client = Client {
        credentials: credentials.clone(),
        config: amqp.clone(),
        outbox,
        wake,
        stats: stats.clone(),
        twin: twin_service,
    };
    Ok(Some(RunningSender {
        control,
        task: Supervised::spawn(
            "sender",
            with_fault(settings, "sender", client.run(control_rx)),
        ),
        stats,
        grace: *grace,
        feeder: owner.feeder,
        owner: Supervised::spawn("owner", owner::supervise(owner.ended)),
        twin,
    }))
}

/// Twin events (connections, desired patches) waiting for the twin task.
const TWIN_EVENTS: usize = 16;

async fn start_metrics(listen: &str, snapshot: Arc<Mutex<Snapshot>>) -> Option<Supervised> {
    let addr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error_id = "E-METRICS", listen, error = %e, "bad metrics address: no /metrics");
            return None;
        }
    };
    match stats::serve_metrics(addr, snapshot).await {
        Ok((bound, task)) => {
            tracing::info!(address = %bound, "serving /metrics");
            Some(Supervised::watch("metrics", task))
        }
        Err(e) => {
            tracing::error!(error_id = "E-METRICS", listen, error = %e, "cannot serve /metrics (port in use?); the module runs on without it");
            None
        }
    }
}

/// Every counter of the module, for the statistics line and `/metrics`: each component
/// fills its part.
fn collect<W: Write>(
    pipeline: &Pipeline,
    source: &SourceStats,
    queue: &LineQueue,
    emitter: &Emitter<W>,
    sender: Option<&RunningSender>,
) -> Snapshot {
    let mut s = Snapshot::default();
    source.fill(&mut s);
    queue.fill(&mut s);
    pipeline.stats().fill(&mut s);
    emitter.fill(&mut s);
    if let Some(sender) = sender {
        sender.stats.fill(&mut s);
        sender.feeder.handle().counts().fill(&mut s);
        if let Some(t) = &sender.twin {
            t.stats.fill(&mut s);
        }
        s.pipeline_waits = sender.feeder.waits();
        s.outgoing_backlog = sender.feeder.backlog() as u64;
    }
    s
}

fn upstream(p: &Pipeline, s: &SourceStats) -> UpstreamDrops {
    UpstreamDrops {
        socket_queue_lines: s.lines_dropped.load(Ordering::Relaxed),
        ..p.upstream_drops()
    }
}

fn feed(pipeline: &mut Pipeline, chunk: Chunk, now: u64, events: &mut Vec<SecurityEvent>) {
    match chunk {
        Chunk::Lines(lines) => {
            for line in source::lines(&lines) {
                pipeline.push_line(line, now, events);
            }
        }
        Chunk::Dropped { serials, .. } => pipeline.dropped_upstream(serials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that panics is reported with its name and the panic's text; one that keeps
    /// running is not; the next call reports the one that returned, and nothing after that.
    #[tokio::test]
    async fn the_first_task_to_end_is_reported_with_why() {
        let mut forever = Supervised::spawn("forever", std::future::pending());
        let mut panics = Supervised::spawn("panics", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("the renewal time overflowed");
        });
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let mut returns = Supervised::spawn("returns", async move { r.notified().await });
        let limit = Duration::from_secs(10);
        let ended = tokio::time::timeout(
            limit,
            first_ended([&mut forever, &mut panics, &mut returns]),
        )
        .await
        .unwrap();
        assert_eq!(
            ended,
            TaskEnded {
                task: "panics",
                why: "it panicked: the renewal time overflowed".into()
            }
        );
        assert!(panics.is_finished());
        release.notify_one();
        let ended = tokio::time::timeout(
            limit,
            first_ended([&mut forever, &mut panics, &mut returns]),
        )
        .await
        .unwrap();
        assert_eq!(
            ended,
            TaskEnded {
                task: "returns",
                why: "it returned".into()
            }
        );
        // Only `forever` is left: nothing ends.
        let none = tokio::time::timeout(
            Duration::from_millis(100),
            first_ended([&mut forever, &mut panics, &mut returns]),
        )
        .await;
        assert!(none.is_err(), "{none:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first_ended([]))
                .await
                .is_err()
        );
        forever.abort();
        forever.join().await;
        panics.join().await;
        assert!(forever.is_finished());
    }

    /// `debug.panic_task` makes the named task, and only it, panic.
    #[tokio::test]
    async fn the_fault_knob_fails_the_named_task() {
        let mut s = Settings::default();
        s.debug.panic_task = "reader".into();
        s.debug.panic_task_after_ms = 10;
        let mut reader =
            Supervised::spawn("reader", with_fault(&s, "reader", std::future::pending()));
        let mut sender =
            Supervised::spawn("sender", with_fault(&s, "sender", std::future::pending()));
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            first_ended([&mut reader, &mut sender]),
        )
        .await
        .unwrap();
        assert_eq!(ended.task, "reader");
        assert_eq!(
            ended.why,
            "it panicked: debug.panic_task: the reader task was made to fail"
        );
        sender.abort();
    }
}

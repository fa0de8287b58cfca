//! The twin task: from edgeHub's module twin to the configuration in force.
//!
//! Contract: one task of `run` (when sending, `edgehub.twin` on) owns the [`DesiredState`]
//! and talks to the twin through [`crate::edge::amqp::twin`]'s [`Twin`] handle. On each
//! connection ([`TwinEvent::Connected`]) it GETs the whole twin, then PUTs the desired
//! subscription (the Node SDK's order), then PATCHes the reported properties when they
//! differ from what the twin holds. A failed GET or PUT (a status, a timeout) is logged
//! (W-TWIN-REQUEST) and retried with back-off while the connection lasts; a new connection
//! starts the sequence again. A failed PATCH is tried again at the next change or connection.
//! Desired patches go through [`DesiredState::on_patch`]: a version gap makes it GET again,
//! a stale one is ignored. What changes the configuration goes to the outgoing state's owner
//! ([`OwnerHandle::set_config`]), is kept in the data directory ([`save_kept`]), and its
//! ConfigurationErrors go upstream ([`OwnerHandle::push`]).
//!
//! The decisions are [`Machine::step`], a pure function of (state, [`Input`]) →
//! [`Action`]s; [`TwinTask::run`] is the thin loop that does the requests, the timers and
//! the calls the actions name.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::agent::AgentConfig;
use crate::config::twin::{DesiredState, KeptDesired, Step, save_kept};
use crate::edge::amqp::backoff::Backoff;
use crate::edge::amqp::twin::{DesiredPatch, Operation, Twin, TwinDocument, TwinError, TwinEvent};
use crate::events::{ConfigurationError, Payload, SecurityEvent};
use crate::outgoing::owner::OwnerHandle;
use crate::stats::Snapshot;

/// A request the machine asks the loop to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// GET the whole twin.
    Get,
    /// PUT the desired-properties subscription.
    Subscribe,
    /// PATCH the reported properties with this document.
    Report(Json),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Got(Result<TwinDocument, TwinError>),
    Subscribed(Result<(), TwinError>),
    /// `sent`: the reported document of the PATCH.
    Reported {
        sent: Json,
        result: Result<(), TwinError>,
    },
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The twin links are attached on a new connection.
    Connected,
    /// A desired-properties patch arrived.
    Desired(DesiredPatch),
    /// The request sent in connection `epoch` ended.
    Done { epoch: u64, outcome: Outcome },
    /// The retry timer `token` fired.
    RetryDue { token: u64 },
}

/// What the loop is asked to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Forget the request in flight: its connection is gone (its outcome would be ignored).
    Abandon,
    /// Make `request`; its outcome comes back as [`Input::Done`] with this `epoch`.
    Send { epoch: u64, request: Request },
    /// Come back with [`Input::RetryDue`] `token` after `delay` (replaces any timer).
    RetryIn { delay: Duration, token: u64 },
    /// The configuration in force changed: hand it to the outgoing state.
    SetConfig(AgentConfig),
    /// Keep this desired configuration in the data directory.
    Keep(KeptDesired),
    /// Send these as one ConfigurationError event upstream.
    Upstream(Vec<ConfigurationError>),
}

/// The task's counters (see [`crate::stats::Snapshot`] for their metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub gets: u64,
    pub applied: u64,
    pub rejected: u64,
    pub stale: u64,
    pub gaps: u64,
    pub request_failures: u64,
    pub reports: u64,
}

/// The request in flight, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Subscribe,
    Report,
}

/// The twin task's decisions: which request next, what an outcome or a patch changes.
pub struct Machine {
    state: DesiredState,
    agent_id: Uuid,
    module_version: String,
    /// Connections seen; 0 = none yet (nothing is sent before the first).
    epoch: u64,
    in_flight: Option<Kind>,
    /// A GET is due on this connection (its first, or after a version gap).
    need_get: bool,
    /// A gap came while a GET was in flight: GET again if that GET's document is older
    /// than this version.
    get_again_below: Option<i64>,
    need_subscribe: bool,
    /// The configuration or its status changed since the last PATCH (or the connection is
    /// new): compare with the twin's reported and PATCH if they differ.
    report_due: bool,
    /// The twin's reported properties as this connection's GET read them, with our PATCHes
    /// that edgeHub accepted merged in; None until the GET.
    remote: Option<Json>,
    backoff: Backoff,
    random: fn() -> f64,
    /// The retry timer awaited, by token.
    retry: Option<u64>,
    tokens: u64,
    /// What the data directory holds (as last restored or kept).
    kept: Option<KeptDesired>,
    counts: Counts,
}

impl Machine {
    /// `state` as restored at start; failed GETs and PUTs are retried after `retry_min`,
    /// doubling up to `retry_max`, with jitter from `random` (uniform in [0, 1)).
    pub fn new(
        state: DesiredState,
        agent_id: Uuid,
        module_version: &str,
        retry_min: Duration,
        retry_max: Duration,
        random: fn() -> f64,
    ) -> Machine {
        let kept = state.kept();
        Machine {
            state,
            agent_id,
            module_version: module_version.to_owned(),
            epoch: 0,
            in_flight: None,
            need_get: false,
            get_again_below: None,
            need_subscribe: false,
            report_due: false,
            remote: None,
            backoff: Backoff::new(retry_min, retry_max),
            random,
            retry: None,
            tokens: 0,
            kept,
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The desired state (read-only: the machine is its one owner).
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// What `input` changes, and what the loop must do about it.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Connected => {
                self.epoch += 1;
                if self.in_flight.take().is_some() {
                    actions.push(Action::Abandon);
                }
                // A new sequence at once: patches may have been missed, and the twin's
                // reported may be another's since.
                self.retry = None;
                self.backoff.reset();
                self.need_get = true;
                self.get_again_below = None;
                self.need_subscribe = true;
                self.report_due = true;
                self.remote = None;
            }
            Input::Desired(p) => {
                let before = self.state.config().clone();
                let step = self.state.on_patch(p.version, &p.body);
                self.on_step(step, "patch", &before, &mut actions);
            }
            Input::Done { epoch, outcome } => {
                if epoch != self.epoch {
                    // A request of a connection that is gone (already abandoned).
                    return actions;
                }
                self.in_flight = None;
                self.on_outcome(outcome, &mut actions);
            }
            Input::RetryDue { token } => {
                if self.retry != Some(token) {
                    return actions;
                }
                self.retry = None;
            }
        }
        self.next(&mut actions);
        actions
    }

    fn on_outcome(&mut self, outcome: Outcome, actions: &mut Vec<Action>) {
        match outcome {
            Outcome::Got(Ok(doc)) => {
                self.counts.gets += 1;
                self.backoff.reset();
                self.need_get = false;
                let before = self.state.config().clone();
                let step = self.state.on_document(&doc.desired);
                self.remote = Some(doc.reported);
                self.report_due = true;
                self.on_step(step, "document", &before, actions);
                if let Some(w) = self.get_again_below.take() {
                    // The gap's patch is newer than this document: it was pushed after
                    // edgeHub answered.
                    if self.state.version().is_none_or(|v| v < w) {
                        self.need_get = true;
                    }
                }
            }
            Outcome::Subscribed(Ok(())) => {
                self.backoff.reset();
                self.need_subscribe = false;
            }
            Outcome::Got(Err(e)) | Outcome::Subscribed(Err(e)) => {
                self.failed(&e);
                let delay = self.backoff.next_delay((self.random)());
                self.tokens += 1;
                self.retry = Some(self.tokens);
                tracing::debug!(
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "twin request retried after a delay"
                );
                actions.push(Action::RetryIn {
                    delay,
                    token: self.tokens,
                });
            }
            Outcome::Reported { sent, result } => match result {
                Ok(()) => {
                    self.counts.reports += 1;
                    if let Some(r) = &mut self.remote {
                        merge(r, &sent);
                    }
                    tracing::info!(
                        version = self.state.version(),
                        "reported properties updated"
                    );
                }
                // Tried again at the next change or connection, not in a loop: the same
                // document would be refused the same way.
                Err(e) => self.failed(&e),
            },
        }
    }

    fn failed(&mut self, e: &TwinError) {
        self.counts.request_failures += 1;
        let status = match e {
            TwinError::Status { status, .. } => Some(*status),
            _ => None,
        };
        let operation = match e {
            TwinError::Status { operation, .. }
            | TwinError::Timeout { operation, .. }
            | TwinError::Request { operation, .. }
            | TwinError::NoStatus { operation, .. } => operation.as_str(),
            TwinError::Body(_) => Operation::Get.as_str(),
            TwinError::Refused(_) => Operation::Patch.as_str(),
        };
        // The status when edgeHub answered with one, "none" for a timeout or a lost link.
        let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        tracing::warn!(
            error_id = "W-TWIN-REQUEST",
            operation,
            status = %status,
            error = %e,
            "a module twin request failed"
        );
    }

    /// What a step of the desired state means for the loop.
    fn on_step(&mut self, step: Step, what: &str, before: &AgentConfig, actions: &mut Vec<Action>) {
        let version = self.state.version();
        match step {
            Step::Applied { config, errors } => {
                self.counts.applied += 1;
                let changed = changed_keys(before, &config);
                tracing::info!(
                    source = what,
                    version,
                    changed = %changed.join(","),
                    problems = errors.len(),
                    "twin configuration applied"
                );
                log_problems(&errors);
                actions.push(Action::SetConfig(config));
                if !errors.is_empty() {
                    actions.push(Action::Upstream(errors));
                }
            }
            Step::Rejected { errors } => {
                self.counts.rejected += 1;
                let settings: Vec<&str> = errors
                    .iter()
                    .map(|e| e.configuration_name.as_str())
                    .collect();
                tracing::warn!(
                    error_id = "W-TWIN-REJECTED",
                    source = what,
                    version,
                    settings = %settings.join(","),
                    first = %errors.first().map(|e| e.message.as_str()).unwrap_or(""),
                    "a desired configuration was rejected whole: the previous one stays"
                );
                if !errors.is_empty() {
                    actions.push(Action::Upstream(errors));
                }
            }
            Step::Unchanged => {
                tracing::info!(source = what, version, "twin configuration unchanged");
            }
            Step::Stale { version, applied } => {
                self.counts.stale += 1;
                tracing::debug!(
                    source = what,
                    version,
                    applied,
                    "an older desired update ignored"
                );
                return;
            }
            Step::Gap { expected, got } => {
                self.counts.gaps += 1;
                tracing::info!(
                    expected,
                    got,
                    "a desired patch skipped a version: reading the whole twin again"
                );
                self.need_get = true;
                if self.in_flight == Some(Kind::Get) {
                    self.get_again_below = Some(self.get_again_below.map_or(got, |w| w.max(got)));
                }
                return;
            }
        }
        // Applied, rejected or unchanged: the version applied (and maybe the last error)
        // moved, so the kept file and the reported properties may differ now.
        self.report_due = true;
        let kept = self.state.kept();
        if kept.is_some() && kept != self.kept {
            self.kept = kept.clone();
            if let Some(k) = kept {
                actions.push(Action::Keep(k));
            }
        }
    }

    /// The next request, when nothing is in flight or waiting to be retried.
    fn next(&mut self, actions: &mut Vec<Action>) {
        if self.epoch == 0 || self.in_flight.is_some() || self.retry.is_some() {
            return;
        }
        let request = if self.need_get {
            self.in_flight = Some(Kind::Get);
            Request::Get
        } else if self.need_subscribe {
            self.in_flight = Some(Kind::Subscribe);
            Request::Subscribe
        } else if self.report_due {
            let Some(remote) = &self.remote else {
                return;
            };
            self.report_due = false;
            let reported = self.state.reported(self.agent_id, &self.module_version);
            let mut after = remote.clone();
            merge(&mut after, &reported);
            if &after == remote {
                // The twin holds it already (a reconnection with nothing changed).
                return;
            }
            self.in_flight = Some(Kind::Report);
            Request::Report(reported)
        } else {
            return;
        };
        actions.push(Action::Send {
            epoch: self.epoch,
            request,
        });
    }
}

/// The agent keys whose value differs between `a` and `b`, sorted by name.
pub fn changed_keys(a: &AgentConfig, b: &AgentConfig) -> Vec<String> {
    let (a, b) = (a.to_twin_json(), b.to_twin_json());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(a.keys().filter(|k| !b.contains_key(*k)).cloned());
    keys
}

fn log_problems(errors: &[ConfigurationError]) {
    for e in errors {
        tracing::warn!(
            error_id = "W-CONFIG",
            setting = %e.configuration_name,
            error = ?e.error_type,
            message = %e.message,
            "agent configuration problem"
        );
    }
}

/// JSON merge patch (RFC 7386), as edgeHub merges a reported PATCH: null removes a key.
pub fn merge(target: &mut Json, patch: &Json) {
    let Json::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(Map::new());
    }
    if let Json::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Json::Null), v);
            }
        }
    }
}

/// The task's counters, published by the loop after each step for the snapshot.
#[derive(Debug, Default)]
pub struct TwinTaskStats {
    gets: AtomicU64,
    applied: AtomicU64,
    rejected: AtomicU64,
    stale: AtomicU64,
    gaps: AtomicU64,
    request_failures: AtomicU64,
    reports: AtomicU64,
    /// The link service's own (patches received, bad ones).
    service: Arc<crate::edge::amqp::twin::TwinStats>,
}

impl TwinTaskStats {
    pub fn new(service: Arc<crate::edge::amqp::twin::TwinStats>) -> Self {
        TwinTaskStats {
            service,
            ..TwinTaskStats::default()
        }
    }

    fn publish(&self, c: Counts) {
        for (a, v) in [
            (&self.gets, c.gets),
            (&self.applied, c.applied),
            (&self.rejected, c.rejected),
            (&self.stale, c.stale),
            (&self.gaps, c.gaps),
            (&self.request_failures, c.request_failures),
            (&self.reports, c.reports),
        ] {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The twin's part of the counters snapshot.
    pub fn fill(&self, s: &mut Snapshot) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.twin_gets = get(&self.gets);
        s.twin_patches = get(&self.service.patches);
        s.twin_bad_patches = get(&self.service.bad_patches);
        s.twin_applied = get(&self.applied);
        s.twin_rejected = get(&self.rejected);
        s.twin_stale = get(&self.stale);
        s.twin_gaps = get(&self.gaps);
        s.twin_request_failures = get(&self.request_failures);
        s.twin_reports = get(&self.reports);
    }
}

type InFlight = Pin<Box<dyn Future<Output = (u64, Outcome)> + Send>>;

/// The twin task: the [`Machine`] and the I/O its actions name.
pub struct TwinTask {
    pub machine: Machine,
    pub twin: Twin,
    pub events: mpsc::Receiver<TwinEvent>,
    pub owner: OwnerHandle,
    pub stats: Arc<TwinTaskStats>,
    /// Where the desired configuration is kept (`module.data_dir`).
    pub data_dir: PathBuf,
    /// The clock of the outgoing state (`run`'s start).
    pub start: Instant,
}

impl TwinTask {
    /// Until the module stops (the task is aborted with the sender's end).
    pub async fn run(mut self) {
        let mut in_flight: Option<InFlight> = None;
        let mut retry: Option<(Pin<Box<tokio::time::Sleep>>, u64)> = None;
        loop {
            let input = tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(TwinEvent::Connected) => Input::Connected,
                    Some(TwinEvent::Desired(p)) => Input::Desired(p),
                    // The link service is gone with the sender task, whose end is the
                    // news (it is supervised): this task has nothing more to do.
                    None => std::future::pending().await,
                },
                (epoch, outcome) = async {
                    match in_flight.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                } => {
                    in_flight = None;
                    Input::Done { epoch, outcome }
                }
                token = async {
                    match retry.as_mut() {
                        Some((sleep, token)) => {
                            sleep.await;
                            *token
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    retry = None;
                    Input::RetryDue { token }
                }
            };
            for action in self.machine.step(input) {
                match action {
                    Action::Abandon => in_flight = None,
                    Action::Send { epoch, request } => {
                        in_flight = Some(send(self.twin.clone(), epoch, request));
                    }
                    Action::RetryIn { delay, token } => {
                        retry = Some((Box::pin(tokio::time::sleep(delay)), token));
                    }
                    Action::SetConfig(config) => {
                        if let Err(e) = self.owner.set_config(config, self.now_ms()).await {
                            // The owner thread has ended: its supervision says why.
                            tracing::debug!(error = %e, "the configuration could not be handed over");
                        }
                    }
                    Action::Keep(k) => self.keep(k).await,
                    Action::Upstream(errors) => {
                        let ev = SecurityEvent {
                            id: Uuid::new_v4(),
                            time_ms: wall_ms(),
                            payload: Payload::ConfigurationError(errors),
                        };
                        if let Err(e) = self.owner.push(ev, self.now_ms()).await {
                            tracing::debug!(error = %e, "a ConfigurationError event could not be handed over");
                        }
                    }
                }
            }
            self.stats.publish(self.machine.counts());
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Keep `k` in the data directory: a failure is logged, never fatal (the twin is read
    /// again on the next connection anyway).
    async fn keep(&self, k: KeptDesired) {
        let dir = self.data_dir.clone();
        let version = k.version;
        let r = tokio::task::spawn_blocking(move || save_kept(&dir, &k)).await;
        match r {
            Ok(Ok(())) => tracing::debug!(version, "desired configuration kept"),
            Ok(Err(e)) => tracing::warn!(
                error_id = "W-TWIN-KEPT",
                dir = %self.data_dir.display(),
                error = %e,
                "cannot keep the desired configuration in the data directory: a restart while edgeHub is away starts from the settings"
            ),
            Err(e) => tracing::warn!(
                error_id = "W-TWIN-KEPT",
                error = %e,
                "keeping the desired configuration failed"
            ),
        }
    }
}

fn wall_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

fn send(twin: Twin, epoch: u64, request: Request) -> InFlight {
    Box::pin(async move {
        let outcome = match request {
            Request::Get => Outcome::Got(twin.get().await),
            Request::Subscribe => Outcome::Subscribed(twin.subscribe_desired().await),
            Request::Report(doc) => {
                let result = twin.report(&doc).await;
                Outcome::Reported { sent: doc, result }
            }
        };
        (epoch, outcome)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::agent::{OBJECT_NAME, Priority};
    use crate::edge::amqp::twin::Operation;
    use crate::events::EventKind;
    use crate::events::operational::ConfigurationErrorType;
    use serde_json::json;

    const AGENT: Uuid = Uuid::from_u128(0x1234);
    const SECOND: Duration = Duration::from_secs(1);

    fn machine() -> Machine {
        Machine::new(
            DesiredState::new(AgentConfig::default()),
            AGENT,
            "9.9.9",
            SECOND,
            Duration::from_secs(8),
            || 0.0,
        )
    }

    /// A desired document holding the agent object `settings`, at `version`.
    fn desired(settings: Json, version: i64) -> Json {
        json!({OBJECT_NAME: settings, "$version": version})
    }

    fn process_create_off() -> Json {
        json!({"eventPriorityProcessCreate": {"value": "Off"}})
    }

    fn got(desired: Json, reported: Json) -> Input {
        Input::Done {
            epoch: 1,
            outcome: Outcome::Got(Ok(TwinDocument { desired, reported })),
        }
    }

    fn done(epoch: u64, outcome: Outcome) -> Input {
        Input::Done { epoch, outcome }
    }

    fn patch(body: Json) -> Input {
        Input::Desired(DesiredPatch {
            version: body.get("$version").and_then(Json::as_i64),
            body,
        })
    }

    fn send(epoch: u64, request: Request) -> Action {
        Action::Send { epoch, request }
    }

    fn status(status: i32, operation: Operation) -> TwinError {
        TwinError::Status { status, operation }
    }

    /// The requests among `actions`.
    fn sends(actions: &[Action]) -> Vec<&Request> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { request, .. } => Some(request),
                _ => None,
            })
            .collect()
    }

    fn off_config() -> AgentConfig {
        let mut c = AgentConfig::default();
        c.set_priority(EventKind::ProcessCreate, Priority::Off);
        c
    }

    /// Connected, the GET of `doc` (reported `{"$version": 1}`) and the PUT done; returns
    /// the PATCH the machine asked for.
    fn connect(m: &mut Machine, doc: Json) -> Json {
        assert_eq!(m.step(Input::Connected), [send(1, Request::Get)]);
        let a = m.step(got(doc, json!({"$version": 1})));
        assert_eq!(sends(&a), [&Request::Subscribe], "{a:?}");
        let a = m.step(done(1, Outcome::Subscribed(Ok(()))));
        match a.as_slice() {
            [
                Action::Send {
                    epoch: 1,
                    request: Request::Report(r),
                },
            ] => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// The SDK's order on a connection: GET, PUT, then the reported PATCH; the document's
    /// configuration handed to the outgoing state and kept; nothing before the connection.
    #[test]
    fn a_connection_gets_subscribes_then_reports_and_the_document_is_applied_and_kept() {
        let mut m = machine();
        // Nothing is sent before a connection; a patch then is a gap, to be read by the GET.
        assert_eq!(m.step(patch(desired(process_create_off(), 2))), []);
        assert_eq!(m.step(Input::RetryDue { token: 0 }), []);
        assert_eq!(m.step(Input::Connected), [send(1, Request::Get)]);
        let doc = desired(process_create_off(), 3);
        let a = m.step(got(doc.clone(), json!({"$version": 1})));
        assert_eq!(
            a,
            [
                Action::SetConfig(off_config()),
                Action::Keep(KeptDesired {
                    version: 3,
                    desired: json!({OBJECT_NAME: process_create_off()})
                }),
                send(1, Request::Subscribe),
            ]
        );
        assert_eq!(m.state().config(), &off_config());
        assert_eq!(m.state().version(), Some(3));
        let reported = m.state().reported(AGENT, "9.9.9");
        assert_eq!(
            m.step(done(1, Outcome::Subscribed(Ok(())))),
            [send(1, Request::Report(reported.clone()))]
        );
        assert_eq!(
            m.step(done(
                1,
                Outcome::Reported {
                    sent: reported,
                    result: Ok(())
                }
            )),
            []
        );
        assert_eq!(
            m.counts(),
            Counts {
                gets: 1,
                applied: 1,
                gaps: 1,
                reports: 1,
                ..Counts::default()
            }
        );
    }

    /// A GET or PUT that fails (a status, a timeout) is retried after the back-off, doubling
    /// (jitter 0: half of 1 s, 2 s, …) and reset by a success; an old timer's token is
    /// ignored.
    #[test]
    fn failed_gets_and_puts_are_retried_with_back_off_while_the_connection_lasts() {
        let mut m = machine();
        m.step(Input::Connected);
        let a = m.step(done(1, Outcome::Got(Err(status(429, Operation::Get)))));
        assert_eq!(
            a,
            [Action::RetryIn {
                delay: Duration::from_millis(500),
                token: 1
            }]
        );
        // Nothing is sent while the retry waits, not even for a patch.
        assert_eq!(m.step(patch(desired(json!({}), 9))), []);
        assert_eq!(
            m.step(Input::RetryDue { token: 1 }),
            [send(1, Request::Get)]
        );
        let timeout = TwinError::Timeout {
            operation: Operation::Get,
            after: SECOND,
        };
        assert_eq!(
            m.step(done(1, Outcome::Got(Err(timeout)))),
            [Action::RetryIn {
                delay: SECOND,
                token: 2
            }]
        );
        assert_eq!(m.step(Input::RetryDue { token: 1 }), []);
        assert_eq!(
            m.step(Input::RetryDue { token: 2 }),
            [send(1, Request::Get)]
        );
        let a = m.step(got(desired(json!({}), 9), json!({})));
        assert_eq!(sends(&a), [&Request::Subscribe]);
        // The success reset the back-off: the PUT's failure waits half a second again.
        assert_eq!(
            m.step(done(
                1,
                Outcome::Subscribed(Err(status(503, Operation::Put)))
            )),
            [Action::RetryIn {
                delay: Duration::from_millis(500),
                token: 3
            }]
        );
        assert_eq!(
            m.step(Input::RetryDue { token: 3 }),
            [send(1, Request::Subscribe)]
        );
        assert_eq!(m.counts().request_failures, 3);
        assert_eq!(m.counts().gets, 1);
    }

    /// A new connection drops the request in flight and the retry timer of the old one,
    /// and starts again with a GET; outcomes of the old connection are ignored.
    #[test]
    fn a_new_connection_starts_the_sequence_again() {
        let mut m = machine();
        assert_eq!(m.step(Input::Connected), [send(1, Request::Get)]);
        assert_eq!(
            m.step(Input::Connected),
            [Action::Abandon, send(2, Request::Get)]
        );
        let doc = desired(process_create_off(), 3);
        assert_eq!(m.step(got(doc.clone(), json!({}))), [], "epoch 1 is gone");
        assert_eq!(m.state().version(), None);
        assert_eq!(
            m.step(done(2, Outcome::Got(Err(status(500, Operation::Get))))),
            [Action::RetryIn {
                delay: Duration::from_millis(500),
                token: 1
            }]
        );
        // The third connection does not wait for the second's timer.
        assert_eq!(m.step(Input::Connected), [send(3, Request::Get)]);
        assert_eq!(m.step(Input::RetryDue { token: 1 }), []);
    }

    /// Patches in `$version` order are applied, kept and reported; a stale one is ignored;
    /// a gap reads the whole twin again once the request in flight is done.
    #[test]
    fn patches_apply_in_order_a_gap_gets_again_and_a_stale_one_is_ignored() {
        let mut m = machine();
        let report = connect(&mut m, desired(json!({}), 3));
        let a = m.step(patch(desired(process_create_off(), 4)));
        assert_eq!(
            a[0],
            Action::SetConfig(off_config()),
            "the patch's configuration: {a:?}"
        );
        assert!(matches!(&a[1], Action::Keep(k) if k.version == 4), "{a:?}");
        assert_eq!(a.len(), 2, "the first PATCH is still in flight: {a:?}");
        assert_eq!(m.step(patch(desired(json!({}), 4))), [], "stale");
        // A gap while the PATCH is in flight: the GET follows it.
        assert_eq!(m.step(patch(desired(json!({}), 6))), []);
        let a = m.step(done(
            1,
            Outcome::Reported {
                sent: report,
                result: Ok(()),
            },
        ));
        assert_eq!(a, [send(1, Request::Get)]);
        // The document of version 3 changed nothing (the defaults): only the patch applied.
        let c = m.counts();
        assert_eq!((c.applied, c.stale, c.gaps, c.reports), (1, 1, 1, 1));
        // The document of version 6 (ProcessCreate back to its default) is applied whole.
        let a = m.step(got(desired(json!({}), 6), json!({"$version": 2})));
        assert_eq!(a[0], Action::SetConfig(AgentConfig::default()));
        assert_eq!(m.state().version(), Some(6));
        assert_eq!(
            sends(&a),
            [&Request::Report(m.state().reported(AGENT, "9.9.9"))]
        );
    }

    /// A gap seen while a GET is in flight GETs again only when that GET's document is
    /// older than the gap's patch.
    #[test]
    fn a_gap_during_a_get_gets_again_only_for_an_older_document() {
        for (doc_version, again) in [(4, true), (5, false)] {
            let mut m = machine();
            m.step(Input::Connected);
            assert_eq!(m.step(patch(desired(process_create_off(), 5))), []);
            let a = m.step(got(desired(json!({}), doc_version), json!({})));
            let want = if again {
                Request::Get
            } else {
                Request::Subscribe
            };
            assert_eq!(sends(&a), [&want], "document {doc_version}: {a:?}");
        }
    }

    /// A wrong type rejects the update: no new configuration, the TypeMismatch upstream,
    /// and the next valid patch still applies.
    #[test]
    fn a_rejected_update_goes_upstream_and_changes_nothing() {
        let mut m = machine();
        let report = connect(&mut m, desired(process_create_off(), 3));
        m.step(done(
            1,
            Outcome::Reported {
                sent: report,
                result: Ok(()),
            },
        ));
        let bad = desired(json!({"highPriorityMessageFrequency": {"value": 5}}), 4);
        let a = m.step(patch(bad));
        assert!(
            !a.iter().any(|x| matches!(x, Action::SetConfig(_))),
            "{a:?}"
        );
        let errors: Vec<&ConfigurationError> = a
            .iter()
            .filter_map(|x| match x {
                Action::Upstream(e) => Some(e),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(errors.len(), 1, "{a:?}");
        assert_eq!(errors[0].error_type, ConfigurationErrorType::TypeMismatch);
        assert_eq!(errors[0].configuration_name, "highPriorityMessageFrequency");
        assert_eq!(m.state().config(), &off_config());
        assert_eq!(m.counts().rejected, 1);
        // What is reported now differs (the last error): it is reported.
        assert_eq!(
            sends(&a),
            [&Request::Report(m.state().reported(AGENT, "9.9.9"))]
        );
    }

    /// Conflict and NotOptimal fixes come with the applied configuration, and go upstream.
    #[test]
    fn problems_of_an_applied_update_go_upstream_with_it() {
        let mut m = machine();
        connect(&mut m, desired(json!({}), 3));
        let short = desired(
            json!({"highPriorityMessageFrequency": {"value": "PT1S"}}),
            4,
        );
        let a = m.step(patch(short));
        let upstream: Vec<&Vec<ConfigurationError>> = a
            .iter()
            .filter_map(|x| match x {
                Action::Upstream(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(upstream.len(), 1, "{a:?}");
        assert_eq!(
            upstream[0][0].error_type,
            ConfigurationErrorType::NotOptimal
        );
        // The minimum (10 s) is used instead, and handed over before the event.
        let want = AgentConfig {
            high_priority_message_frequency: crate::config::agent::MIN_MESSAGE_FREQUENCY,
            ..AgentConfig::default()
        };
        assert_eq!(a[0], Action::SetConfig(want), "{a:?}");
        assert!(matches!(a[1], Action::Upstream(_)), "{a:?}");
    }

    /// What the twin's reported already holds is not PATCHed again: a reconnection with
    /// nothing changed sends none; a twin whose reported was reset gets it again.
    #[test]
    fn reported_properties_are_patched_only_when_the_twin_lacks_them() {
        let mut m = machine();
        let report = connect(&mut m, desired(process_create_off(), 3));
        m.step(done(
            1,
            Outcome::Reported {
                sent: report.clone(),
                result: Ok(()),
            },
        ));
        // Connection 2: the twin holds what was reported, merged as edgeHub merges (a null
        // removes), and its own $version.
        let mut held = json!({"$version": 2});
        merge(&mut held, &report);
        assert_eq!(m.step(Input::Connected), [send(2, Request::Get)]);
        let a = m.step(done(
            2,
            Outcome::Got(Ok(TwinDocument {
                desired: desired(process_create_off(), 3),
                reported: held,
            })),
        ));
        assert_eq!(a, [send(2, Request::Subscribe)]);
        assert_eq!(m.step(done(2, Outcome::Subscribed(Ok(())))), []);
        // Connection 3: another writer removed a key of ours: reported again.
        m.step(Input::Connected);
        let mut less = report.clone();
        if let Some(o) = less.as_object_mut() {
            let first = o.keys().next().cloned().unwrap_or_default();
            o.remove(&first);
        }
        m.step(done(
            3,
            Outcome::Got(Ok(TwinDocument {
                desired: desired(process_create_off(), 3),
                reported: less,
            })),
        ));
        assert_eq!(
            m.step(done(3, Outcome::Subscribed(Ok(())))),
            [send(3, Request::Report(report))]
        );
        assert_eq!(m.counts().reports, 1);
    }

    /// A refused or failed PATCH is not retried in a loop: it goes again at the next change.
    #[test]
    fn a_failed_patch_is_tried_again_at_the_next_change() {
        let mut m = machine();
        let report = connect(&mut m, desired(json!({}), 3));
        let a = m.step(done(
            1,
            Outcome::Reported {
                sent: report,
                result: Err(status(400, Operation::Patch)),
            },
        ));
        assert_eq!(a, []);
        assert_eq!(m.counts().request_failures, 1);
        let a = m.step(patch(desired(process_create_off(), 4)));
        assert_eq!(
            sends(&a),
            [&Request::Report(m.state().reported(AGENT, "9.9.9"))]
        );
    }

    #[test]
    fn merge_is_rfc_7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": 3, "$version": 4});
        merge(
            &mut t,
            &json!({"a": {"b": null, "e": [1]}, "d": {"x": 1}, "f": "g"}),
        );
        assert_eq!(
            t,
            json!({"a": {"c": 2, "e": [1]}, "d": {"x": 1}, "f": "g", "$version": 4})
        );
        let mut s = json!(1);
        merge(&mut s, &json!({"a": null, "b": 2}));
        assert_eq!(s, json!({"b": 2}));
        merge(&mut s, &json!([1]));
        assert_eq!(s, json!([1]));
    }

    #[test]
    fn changed_keys_name_what_differs_sorted_by_name() {
        let a = AgentConfig::default();
        let mut b = off_config();
        b.high_priority_message_frequency = Duration::from_secs(60);
        assert_eq!(
            changed_keys(&a, &b),
            ["eventPriorityProcessCreate", "highPriorityMessageFrequency"]
        );
        assert_eq!(changed_keys(&a, &a), Vec::<String>::new());
    }

    /// Each counter lands in its own field of the snapshot, the link service's too.
    #[test]
    fn the_twin_fills_its_part_of_the_snapshot() {
        let service = Arc::new(crate::edge::amqp::twin::TwinStats::default());
        service.patches.store(11, Ordering::Relaxed);
        service.bad_patches.store(12, Ordering::Relaxed);
        let stats = TwinTaskStats::new(service);
        stats.publish(Counts {
            gets: 1,
            applied: 2,
            rejected: 3,
            stale: 4,
            gaps: 5,
            request_failures: 6,
            reports: 7,
        });
        let mut s = Snapshot::default();
        stats.fill(&mut s);
        assert_eq!(
            s,
            Snapshot {
                twin_gets: 1,
                twin_applied: 2,
                twin_rejected: 3,
                twin_stale: 4,
                twin_gaps: 5,
                twin_request_failures: 6,
                twin_reports: 7,
                twin_patches: 11,
                twin_bad_patches: 12,
                ..Snapshot::default()
            }
        );
    }
}

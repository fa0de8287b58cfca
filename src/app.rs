//! Wiring of `run` and `replay`: the tasks, the channels between them, and shutdown.
//!
//! `run`: a socket-reader task drains auditd's af_unix socket into a byte-bounded
//! [`LineQueue`] (dropping and counting there when the pipeline falls behind, never leaving
//! data in auditd's socket), and the pipeline task turns the lines into security events and
//! hands them to the sink. `replay` feeds the same [`Pipeline`] from a file, taking time from
//! the records, so the same input always gives the same events.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Notify;

use crate::audit::source::{self, Chunk, LineQueue, SocketConfig, SourceStats};
use crate::events::SecurityEvent;
use crate::pipeline::{Pipeline, PipelineStats};
use crate::settings::Settings;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("reading the audit log: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
    #[error("serializing an event: {0}")]
    Json(#[from] serde_json::Error),
}

/// Replay audit.log text: one security event (JSON) per line on `out`.
pub fn replay<R: BufRead, W: Write>(
    settings: &Settings,
    input: R,
    mut out: W,
) -> Result<PipelineStats, AppError> {
    let mut pipeline = Pipeline::new(settings);
    let mut events = Vec::new();
    let mut write_err = None;
    let mut buf = Vec::with_capacity(4096);
    let mut emit = |events: &mut Vec<SecurityEvent>, out: &mut W| {
        for ev in events.drain(..) {
            if write_err.is_some() {
                continue;
            }
            if let Err(e) = write_event(&mut buf, &ev, out) {
                write_err = Some(e);
            }
        }
    };
    let oversized = source::read_lines(input, settings.audit.max_line_bytes, |line| {
        pipeline.push_line(line, 0, &mut events);
        emit(&mut events, &mut out);
    })
    .map_err(AppError::Read)?;
    pipeline.flush(&mut events);
    emit(&mut events, &mut out);
    if let Some(e) = write_err {
        return Err(e);
    }
    out.flush().map_err(AppError::Write)?;
    if oversized > 0 {
        tracing::warn!(lines = oversized, "over-long lines skipped");
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

/// How often idle events are completed and held logins expired.
const TICK: Duration = Duration::from_millis(100);
/// How often the statistics line is logged.
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Run on the live socket until `shutdown` is notified; events go to `sink`.
pub async fn run(
    settings: Settings,
    shutdown: Arc<Notify>,
    mut sink: impl FnMut(&SecurityEvent) -> Result<(), AppError> + Send + 'static,
) -> Result<PipelineStats, AppError> {
    let start = Instant::now();
    let now_ms = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let queue = LineQueue::new(settings.audit.queue_max_bytes);
    let source_stats = Arc::new(SourceStats::default());
    let stop_reader = Arc::new(Notify::new());
    let reader = tokio::spawn(source::read_socket(
        SocketConfig {
            path: settings.audit.socket_path.clone(),
            reconnect_min: Duration::from_millis(settings.audit.reconnect_min_ms),
            reconnect_max: Duration::from_millis(settings.audit.reconnect_max_ms),
            max_line: settings.audit.max_line_bytes,
        },
        queue.clone(),
        source_stats.clone(),
        stop_reader.clone(),
    ));

    let mut pipeline = Pipeline::new(&settings);
    let mut events = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_at = Instant::now() + STATS_EVERY;
    let rules_warn_ms = settings.audit.rules_warning_after_secs.saturating_mul(1000);
    let mut rules_warned = false;
    let mut pause = (settings.debug.pause_pipeline_ms > 0).then(|| {
        (
            start + Duration::from_millis(settings.debug.pause_pipeline_after_ms),
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
                                minutes = rules_warn_ms / 60_000,
                                "no audit event with the key azureiotsecurity arrived: the module's audit rules may not be loaded. Load them as root with: azureiotsecurity rules | auditctl -R /dev/stdin"
                            );
                        }
                    }
                    if Instant::now() >= stats_at {
                        stats_at = Instant::now() + STATS_EVERY;
                        log_stats(&pipeline.stats(), &source_stats, queue.bytes());
                    }
                }
                _ = shutdown.notified() => return Ok(()),
            }
            for ev in events.drain(..) {
                sink(&ev)?;
            }
        }
    }
    .await;
    // Shutdown: stop reading, finish what was read, flush what is in flight.
    stop_reader.notify_one();
    let _ = reader.await;
    while let Some(chunk) = queue.try_pop() {
        feed(&mut pipeline, chunk, now_ms(), &mut events);
    }
    pipeline.flush(&mut events);
    for ev in events.drain(..) {
        sink(&ev)?;
    }
    result?;
    let stats = pipeline.stats();
    log_stats(&stats, &source_stats, 0);
    Ok(stats)
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

fn log_stats(p: &PipelineStats, s: &SourceStats, queue_bytes: usize) {
    let c = &p.coalesce;
    tracing::info!(
        bytes_read = s.bytes_read.load(Ordering::Relaxed),
        lines_read = s.lines_read.load(Ordering::Relaxed),
        lines_dropped_queue_full = s.lines_dropped.load(Ordering::Relaxed),
        bytes_dropped_queue_full = s.bytes_dropped.load(Ordering::Relaxed),
        partial_lines = s.partial_lines.load(Ordering::Relaxed),
        oversized_lines = s.oversized_lines.load(Ordering::Relaxed),
        connects = s.connects.load(Ordering::Relaxed),
        queue_bytes,
        non_utf8_lines = p.non_utf8_lines,
        bad_lines = c.bad_lines,
        audit_events = c.events,
        evicted = c.evicted,
        estimated_kernel_loss = c.estimated_lost,
        security_events = p.derive.events,
        process_create = p.derive.process_create,
        connection_create = p.derive.connection_create,
        login = p.derive.login,
        "audit statistics"
    );
}

//! One counters snapshot: each component fills its part of a [`Snapshot`] (the source, the
//! pipeline, the outgoing state, the AMQP sender: `fill` beside their own counters), and the
//! same snapshot feeds both the statistics log line (every minute and at stop) and the
//! optional Prometheus `/metrics` endpoint (IoT Edge's metrics-collector convention: plain
//! HTTP, port 9600, path `/metrics`, text exposition format; `[metrics] enabled = true`).
//! Both renderings come from one table, so a counter cannot be in one and not the other.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// One counter or gauge of the snapshot, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The key on the statistics line (the field's name).
    pub key: &'static str,
    /// The metric's name, without the `azureiotsecurity_` prefix.
    pub metric: &'static str,
    /// `counter` (cumulative since start) or `gauge` (a current value).
    pub kind: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// Declares [`Snapshot`], its table of rows and its log line from one list, so that a
/// counter added here is in the struct, the statistics line and `/metrics` at once.
macro_rules! snapshot {
    ($($(#[doc = $doc:literal])* $field:ident: $kind:ident $metric:literal, $help:literal;)*) => {
        /// Every counter of the module at one moment (cumulative since start unless a gauge).
        #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Snapshot {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Snapshot {
            /// Every counter, in the order of the statistics line.
            pub fn rows(&self) -> Vec<Row> {
                vec![$(Row {
                    key: stringify!($field),
                    metric: $metric,
                    kind: stringify!($kind),
                    help: $help,
                    value: self.$field,
                }),*]
            }

            /// The statistics log line: every counter, key=value.
            pub fn log(&self) {
                tracing::info!($($field = self.$field,)* "statistics");
            }
        }
    };
}

snapshot! {
    // The source (audit::source): the socket reader and its line queue.
    bytes_read: counter "audit_bytes_read_total", "bytes read from the audit socket";
    lines_read: counter "audit_lines_read_total", "audit lines read from the socket";
    /// Lines dropped because the queue to the pipeline was full.
    lines_dropped_queue_full: counter "audit_lines_dropped_total",
        "audit lines dropped because the module fell behind";
    bytes_dropped_queue_full: counter "audit_bytes_dropped_total",
        "bytes of audit lines dropped because the module fell behind";
    partial_lines: counter "audit_partial_lines_total",
        "partial audit lines lost when a connection ended mid-line";
    oversized_lines: counter "audit_oversized_lines_total",
        "audit lines longer than audit.max_line_bytes, skipped";
    /// Connections to the audit socket (not edgeHub's: `connects`).
    audit_connects: counter "audit_connects_total", "connections to the audit socket";
    short_connections: counter "audit_short_connections_total",
        "audit socket connections that ended at once (counted as failed attempts)";
    /// Bytes waiting in the line queue between the reader and the pipeline.
    queue_bytes: gauge "audit_queue_bytes",
        "bytes of audit lines waiting for the pipeline";
    // The pipeline: parse, coalesce, derive.
    non_utf8_lines: counter "audit_non_utf8_lines_total", "audit lines that are not UTF-8";
    records_read: counter "audit_records_read_total", "audit records read from the socket";
    bad_lines: counter "audit_bad_lines_total", "audit lines that did not parse";
    /// Records refused because their time is after the year 9999 (of `bad_lines`).
    bad_time_lines: counter "audit_bad_time_lines_total",
        "audit records refused because their time is after the year 9999";
    audit_events: counter "audit_events_total", "audit events coalesced";
    evicted: counter "audit_events_evicted_total",
        "audit events emitted early because the in-flight bounds were reached";
    estimated_kernel_loss: counter "audit_estimated_kernel_loss_total",
        "audit events lost before the module (serial gaps)";
    security_events: counter "security_events_total", "security events derived";
    process_create: counter "security_events_process_create_total",
        "ProcessCreate events derived";
    connection_create: counter "security_events_connection_create_total",
        "ConnectionCreate events derived";
    login: counter "security_events_login_total", "Login events derived";
    login_evicted: counter "login_tracker_evicted_total",
        "pids the login tracker forgot early (its bounds reached)";
    /// Times the pipeline waited because the outgoing state's command queue was full (while
    /// it waits, the line queue fills and the reader drops, counted above).
    pipeline_waits: counter "pipeline_outgoing_waits_total",
        "times the pipeline waited for the outgoing state (its command queue full)";
    /// Commands (events, ticks) waiting for the outgoing state's thread.
    outgoing_backlog: gauge "outgoing_commands_waiting",
        "commands waiting for the outgoing state's thread";
    // The outgoing state: aggregation, the outbox, batching.
    messages_sent: counter "messages_sent_total", "messages accepted by edgeHub";
    bytes_sent: counter "message_bytes_sent_total", "bytes of messages accepted by edgeHub";
    chunks_sent: counter "message_chunks_sent_total",
        "4 KB billing chunks of messages accepted by edgeHub";
    messages_failed: counter "messages_failed_total", "messages rejected by edgeHub (final)";
    dropped_high: counter "events_dropped_high_total",
        "high-priority events dropped (full cache, rejected messages)";
    dropped_low: counter "events_dropped_low_total",
        "low-priority events dropped (full cache, rejected messages)";
    /// Events of a type whose priority is Off: not collected, not sent (configured out).
    configured_out: counter "events_configured_out_total",
        "events of a type whose priority is Off (configured out: not collected, not sent)";
    queued_messages: gauge "queued_messages", "messages in the outbox, waiting to be sent";
    queued_bytes: gauge "queued_bytes", "bytes held in the outbox (pending events and messages)";
    // The AMQP sender (edge::amqp).
    /// Connections to edgeHub that authenticated.
    connects: counter "edgehub_connects_total", "connections to edgeHub that authenticated";
    connect_failures: counter "edgehub_connect_failures_total",
        "connections to edgeHub that failed or ended in error";
    put_tokens: counter "edgehub_put_tokens_total", "CBS put-token requests edgeHub accepted";
    delivered: counter "edgehub_delivered_total", "messages edgeHub accepted (deliveries)";
    delivered_bytes: counter "edgehub_delivered_bytes_total",
        "bytes of the messages edgeHub accepted (deliveries)";
    rejected: counter "edgehub_rejected_total", "messages edgeHub rejected";
    released_or_modified: counter "messages_released_total",
        "messages edgeHub released or modified (sent again)";
    send_timeouts: counter "edgehub_send_timeouts_total",
        "messages edgeHub did not settle in time (the connection is reopened)";
    // The module twin (edge::amqp::twin, crate::twin).
    twin_gets: counter "twin_gets_total", "module twin GETs answered (the whole twin read)";
    twin_patches: counter "twin_patches_total", "desired-property patches received";
    /// Messages without correlation-id on the twin link that are not a JSON object.
    twin_bad_patches: counter "twin_bad_patches_total",
        "messages on the twin link that are not a desired patch (ignored)";
    /// Desired updates (a GET's document or a patch) that changed the configuration.
    twin_applied: counter "twin_updates_applied_total",
        "desired updates that changed the configuration in force";
    twin_rejected: counter "twin_updates_rejected_total",
        "desired updates rejected whole (a value of the wrong type)";
    twin_stale: counter "twin_updates_stale_total",
        "desired updates older than the version applied (ignored)";
    twin_gaps: counter "twin_version_gaps_total",
        "desired patches that skipped a version (the twin is read again)";
    twin_request_failures: counter "twin_request_failures_total",
        "twin requests that failed (status, timeout): GET and PUT retried, PATCH at the next change";
    twin_reports: counter "twin_reports_total", "reported-property PATCHes edgeHub accepted";
}

impl Snapshot {
    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        for Row {
            metric,
            kind,
            help,
            value,
            ..
        } in self.rows()
        {
            let _ = writeln!(s, "# HELP azureiotsecurity_{metric} {help}");
            let _ = writeln!(s, "# TYPE azureiotsecurity_{metric} {kind}");
            let _ = writeln!(s, "azureiotsecurity_{metric} {value}");
        }
        s
    }
}

/// Serve `/metrics` on `addr` until the task is dropped; `snapshot` is refreshed by the run
/// loop. Returns the bound address (port 0 picks one).
pub async fn serve_metrics(
    addr: SocketAddr,
    snapshot: Arc<Mutex<Snapshot>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let snapshot = snapshot.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let snapshot = snapshot.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            let text = snapshot.lock().map(|c| c.prometheus()).unwrap_or_default();
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(text)))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                        Ok::<_, hyper::http::Error>(resp.unwrap_or_default())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_value_for_each() {
        let c = Snapshot {
            messages_sent: 7,
            queued_bytes: 4096,
            bad_time_lines: 3,
            ..Snapshot::default()
        };
        let t = c.prometheus();
        assert!(t.contains("# TYPE azureiotsecurity_messages_sent_total counter\nazureiotsecurity_messages_sent_total 7\n"));
        assert!(t.contains(
            "# TYPE azureiotsecurity_queued_bytes gauge\nazureiotsecurity_queued_bytes 4096\n"
        ));
        assert!(t.contains("\nazureiotsecurity_audit_bad_time_lines_total 3\n"));
        assert_eq!(
            t.lines().filter(|l| !l.starts_with('#')).count(),
            c.rows().len()
        );
    }

    /// A snapshot whose every field (as serde sees the struct, not as the table lists it)
    /// holds its own value: 1001, 1002, …; the fields sorted by name.
    fn numbered() -> (Snapshot, Vec<(String, u64)>) {
        let serde_json::Value::Object(fields) = serde_json::to_value(Snapshot::default()).unwrap()
        else {
            panic!("a snapshot serializes to an object");
        };
        let mut keys: Vec<&String> = fields.keys().collect();
        keys.sort();
        let numbered: Vec<(String, u64)> = keys
            .into_iter()
            .zip(1001u64..)
            .map(|(k, v)| (k.clone(), v))
            .collect();
        let object: serde_json::Map<_, _> = numbered
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        let s = serde_json::from_value(serde_json::Value::Object(object)).unwrap();
        (s, numbered)
    }

    /// The statistics line of `s`, as the module's log writes it (plain fmt, no colours).
    fn log_line(s: &Snapshot) -> String {
        let text = crate::test_support::capture_log(|| s.log());
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        text
    }

    /// No drift: every field of the snapshot is on the statistics line and in `/metrics`,
    /// with its own value, and neither rendering has anything else.
    #[test]
    fn every_counter_is_on_the_log_line_and_in_metrics_with_the_same_value() {
        let (s, fields) = numbered();
        // Every counter the three statistics lines logged before they became one.
        for key in [
            "bytes_read",
            "lines_read",
            "lines_dropped_queue_full",
            "bytes_dropped_queue_full",
            "partial_lines",
            "oversized_lines",
            "audit_connects",
            "short_connections",
            "queue_bytes",
            "non_utf8_lines",
            "records_read",
            "bad_lines",
            "bad_time_lines",
            "audit_events",
            "evicted",
            "estimated_kernel_loss",
            "security_events",
            "process_create",
            "connection_create",
            "login",
            "login_evicted",
            "messages_sent",
            "bytes_sent",
            "chunks_sent",
            "messages_failed",
            "dropped_high",
            "dropped_low",
            "queued_messages",
            "queued_bytes",
            "connects",
            "connect_failures",
            "put_tokens",
            "delivered",
            "delivered_bytes",
            "rejected",
            "released_or_modified",
            "send_timeouts",
        ] {
            assert!(fields.iter().any(|(k, _)| k == key), "{key} is not counted");
        }

        let line = log_line(&s);
        assert!(line.contains(" statistics "), "{line}");
        let mut logged: Vec<(String, u64)> = line
            .split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        logged.sort();
        assert_eq!(logged, fields, "the statistics line: {line}");

        let text = s.prometheus();
        let served: Vec<(String, u64)> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, v) = l.split_once(' ').unwrap();
                (name.to_owned(), v.parse().unwrap())
            })
            .collect();
        let rows = s.rows();
        assert_eq!(served.len(), fields.len(), "{text}");
        for (key, value) in &fields {
            let row = rows.iter().find(|r| r.key == key).unwrap();
            let name = format!("azureiotsecurity_{}", row.metric);
            assert!(
                served.contains(&(name.clone(), *value)),
                "{key}={value} is not served as {name}: {text}"
            );
            assert!(text.contains(&format!("# TYPE {name} {}\n", row.kind)));
        }
        // Names stay unique, and those that tests and dashboards use keep theirs.
        let mut names: Vec<&str> = rows.iter().map(|r| r.metric).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), rows.len());
        for (key, metric) in [
            ("records_read", "audit_records_read_total"),
            ("lines_dropped_queue_full", "audit_lines_dropped_total"),
            ("security_events", "security_events_total"),
            ("messages_sent", "messages_sent_total"),
            ("messages_failed", "messages_failed_total"),
            ("dropped_high", "events_dropped_high_total"),
            ("dropped_low", "events_dropped_low_total"),
            ("connects", "edgehub_connects_total"),
            ("released_or_modified", "messages_released_total"),
            ("queued_bytes", "queued_bytes"),
        ] {
            assert!(
                rows.iter().any(|r| r.key == key && r.metric == metric),
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn metrics_are_served_over_http() {
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let (addr, task) = serve_metrics("127.0.0.1:0".parse().unwrap(), snapshot.clone())
            .await
            .unwrap();
        snapshot.lock().unwrap().security_events = 42;
        let get = |path: &'static str| async move {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        };
        let (status, body) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("azureiotsecurity_security_events_total 42\n"),
            "{body}"
        );
        assert_eq!(get("/other").await.0, StatusCode::NOT_FOUND);
        task.abort();
    }
}

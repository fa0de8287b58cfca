//! The module's counters in one place: the statistics log line (every minute) and the
//! optional Prometheus `/metrics` endpoint, which follows IoT Edge's metrics-collector
//! convention (plain HTTP, port 9600, path `/metrics`, text exposition format). Off by
//! default (`[metrics] enabled = true` turns it on).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// All counters, cumulative since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub records_read: u64,
    /// Records refused because their time is after the year 9999.
    pub bad_time_lines: u64,
    pub lines_dropped_queue_full: u64,
    pub audit_events: u64,
    pub estimated_kernel_loss: u64,
    pub security_events: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub messages_failed: u64,
    pub dropped_high: u64,
    pub dropped_low: u64,
    pub queued_messages: u64,
    pub queued_bytes: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub released: u64,
}

impl Counters {
    /// (name, help, kind, value) of every metric.
    fn metrics(&self) -> [(&'static str, &'static str, &'static str, u64); 17] {
        [
            (
                "audit_records_read_total",
                "audit records read from the socket",
                "counter",
                self.records_read,
            ),
            (
                "audit_bad_time_lines_total",
                "audit records refused because their time is after the year 9999",
                "counter",
                self.bad_time_lines,
            ),
            (
                "audit_lines_dropped_total",
                "audit lines dropped because the module fell behind",
                "counter",
                self.lines_dropped_queue_full,
            ),
            (
                "audit_events_total",
                "audit events coalesced",
                "counter",
                self.audit_events,
            ),
            (
                "audit_estimated_kernel_loss_total",
                "audit events lost before the module (serial gaps)",
                "counter",
                self.estimated_kernel_loss,
            ),
            (
                "security_events_total",
                "security events derived",
                "counter",
                self.security_events,
            ),
            (
                "messages_sent_total",
                "messages accepted by edgeHub",
                "counter",
                self.messages_sent,
            ),
            (
                "message_bytes_sent_total",
                "bytes of messages accepted by edgeHub",
                "counter",
                self.bytes_sent,
            ),
            (
                "message_chunks_sent_total",
                "4 KB billing chunks of messages accepted by edgeHub",
                "counter",
                self.chunks_sent,
            ),
            (
                "messages_failed_total",
                "messages rejected by edgeHub (final)",
                "counter",
                self.messages_failed,
            ),
            (
                "events_dropped_high_total",
                "high-priority events dropped (full cache, rejected messages)",
                "counter",
                self.dropped_high,
            ),
            (
                "events_dropped_low_total",
                "low-priority events dropped (full cache, rejected messages)",
                "counter",
                self.dropped_low,
            ),
            (
                "queued_messages",
                "messages in the outbox, waiting to be sent",
                "gauge",
                self.queued_messages,
            ),
            (
                "queued_bytes",
                "bytes held in the outbox (pending events and messages)",
                "gauge",
                self.queued_bytes,
            ),
            (
                "edgehub_connects_total",
                "connections to edgeHub that authenticated",
                "counter",
                self.connects,
            ),
            (
                "edgehub_connect_failures_total",
                "connections to edgeHub that failed or ended in error",
                "counter",
                self.connect_failures,
            ),
            (
                "messages_released_total",
                "messages edgeHub released or modified (sent again)",
                "counter",
                self.released,
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        for (name, help, kind, v) in self.metrics() {
            let _ = writeln!(s, "# HELP azureiotsecurity_{name} {help}");
            let _ = writeln!(s, "# TYPE azureiotsecurity_{name} {kind}");
            let _ = writeln!(s, "azureiotsecurity_{name} {v}");
        }
        s
    }

    /// The statistics log line.
    pub fn log(&self) {
        tracing::info!(
            records_read = self.records_read,
            bad_time_lines = self.bad_time_lines,
            lines_dropped_queue_full = self.lines_dropped_queue_full,
            audit_events = self.audit_events,
            estimated_kernel_loss = self.estimated_kernel_loss,
            security_events = self.security_events,
            messages_sent = self.messages_sent,
            bytes_sent = self.bytes_sent,
            chunks_sent = self.chunks_sent,
            messages_failed = self.messages_failed,
            dropped_high = self.dropped_high,
            dropped_low = self.dropped_low,
            queued_messages = self.queued_messages,
            queued_bytes = self.queued_bytes,
            connects = self.connects,
            connect_failures = self.connect_failures,
            released = self.released,
            "statistics"
        );
    }
}

/// Serve `/metrics` on `addr` until the task is dropped; `counters` is refreshed by the run
/// loop. Returns the bound address (port 0 picks one).
pub async fn serve_metrics(
    addr: SocketAddr,
    counters: Arc<Mutex<Counters>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counters = counters.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            let text = counters.lock().map(|c| c.prometheus()).unwrap_or_default();
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
        let c = Counters {
            messages_sent: 7,
            queued_bytes: 4096,
            bad_time_lines: 3,
            ..Counters::default()
        };
        let t = c.prometheus();
        assert!(t.contains("# TYPE azureiotsecurity_messages_sent_total counter\nazureiotsecurity_messages_sent_total 7\n"));
        assert!(t.contains(
            "# TYPE azureiotsecurity_queued_bytes gauge\nazureiotsecurity_queued_bytes 4096\n"
        ));
        assert!(t.contains("\nazureiotsecurity_audit_bad_time_lines_total 3\n"));
        assert_eq!(t.lines().filter(|l| !l.starts_with('#')).count(), 17);
    }

    #[tokio::test]
    async fn metrics_are_served_over_http() {
        let counters = Arc::new(Mutex::new(Counters::default()));
        let (addr, task) = serve_metrics("127.0.0.1:0".parse().unwrap(), counters.clone())
            .await
            .unwrap();
        counters.lock().unwrap().security_events = 42;
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

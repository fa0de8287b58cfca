//! Readers of the audit stream: auditd's af_unix socket (live, [`read_socket`]) and audit.log
//! text (replay, [`read_lines`]). Both hand on whole `\n`-terminated lines, each bounded by
//! `max_line_bytes`. The live reader never waits for the pipeline: it drains the socket into a
//! byte-bounded [`LineQueue`] and drops (and counts) whole chunks there when the pipeline falls
//! behind; it reconnects with capped back-off and never gives up (README, "Reading the stream
//! without stalling the host"; `shared/reference/auditd-here.md` A.2, A.4).

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::stats::Snapshot;

/// Counters of the source, shared with the statistics reporter.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub bytes_read: AtomicU64,
    pub lines_read: AtomicU64,
    /// Lines dropped because the queue to the pipeline was full.
    pub lines_dropped: AtomicU64,
    pub bytes_dropped: AtomicU64,
    /// Lines longer than the limit, skipped.
    pub oversized_lines: AtomicU64,
    /// Partial lines lost when a connection ended mid-line.
    pub partial_lines: AtomicU64,
    pub connects: AtomicU64,
    /// Connections that ended within [`STABLE_CONNECTION`] (counted as failed attempts).
    pub short_connections: AtomicU64,
}

impl SourceStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The source's part of the counters snapshot.
    pub fn fill(&self, s: &mut Snapshot) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.bytes_read = get(&self.bytes_read);
        s.lines_read = get(&self.lines_read);
        s.lines_dropped_queue_full = get(&self.lines_dropped);
        s.bytes_dropped_queue_full = get(&self.bytes_dropped);
        s.partial_lines = get(&self.partial_lines);
        s.oversized_lines = get(&self.oversized_lines);
        s.audit_connects = get(&self.connects);
        s.short_connections = get(&self.short_connections);
    }
}

/// Splits a byte stream into whole lines, bounding their length.
///
/// `feed` appends data and returns the span of complete lines (ending with `\n`) that can be
/// handed on; the partial tail is kept: auditd writes one record per `write()`, but nothing
/// promises that a `read()` ends on a newline. A line longer than `max_line` is dropped to its
/// end and counted.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    /// Inside an over-long line: drop bytes until the next newline.
    skipping: bool,
    /// Complete-line bytes at the front of `buf` ready to be taken.
    ready: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            buf: Vec::with_capacity(64 << 10),
            max_line,
            skipping: false,
            ready: 0,
        }
    }

    /// Add bytes. Returns the number of over-long lines skipped in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut oversized = 0;
        if self.skipping {
            match memchr::memchr(b'\n', data) {
                Some(p) => {
                    self.skipping = false;
                    data = &data[p + 1..];
                }
                None => return 0,
            }
        }
        self.buf.extend_from_slice(data);
        if let Some(p) = memchr::memrchr(b'\n', &self.buf[self.ready..]) {
            self.ready += p + 1;
        }
        // Whole lines inside the ready part that are too long are removed.
        if self.ready > 0 && self.ready > self.max_line {
            oversized += self.drop_long_lines();
        }
        // The partial tail is too long: drop it and skip to its newline.
        let tail = self.buf.len() - self.ready;
        if tail > self.max_line {
            self.buf.truncate(self.ready);
            self.skipping = true;
            oversized += 1;
        }
        oversized
    }

    /// Remove over-long lines from the ready part (rare: only when the ready part is long).
    fn drop_long_lines(&mut self) -> u64 {
        let mut dropped = 0;
        let mut out = Vec::with_capacity(self.buf.len());
        let mut start = 0;
        while start < self.ready {
            let end = memchr::memchr(b'\n', &self.buf[start..self.ready])
                .map_or(self.ready, |p| start + p + 1);
            if end - start - 1 > self.max_line {
                dropped += 1;
            } else {
                out.extend_from_slice(&self.buf[start..end]);
            }
            start = end;
        }
        let new_ready = out.len();
        out.extend_from_slice(&self.buf[self.ready..]);
        self.buf = out;
        self.ready = new_ready;
        dropped
    }

    /// Take the complete lines gathered so far (each ending with `\n`), or `None`.
    pub fn take_ready(&mut self) -> Option<Vec<u8>> {
        if self.ready == 0 {
            return None;
        }
        let tail = self.buf.split_off(self.ready);
        let chunk = std::mem::replace(&mut self.buf, tail);
        self.ready = 0;
        Some(chunk)
    }

    /// Forget a partial line (the connection ended). Returns whether there was one.
    pub fn reset(&mut self) -> bool {
        let had = self.buf.len() > self.ready || self.skipping;
        self.buf.truncate(self.ready);
        self.skipping = false;
        had
    }

    /// The partial tail at end of input, as a last line if it is not empty.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let mut all = std::mem::take(&mut self.buf);
        self.ready = 0;
        let skipping = std::mem::replace(&mut self.skipping, false);
        if all.is_empty() || skipping && all.is_empty() {
            return None;
        }
        if all.last() != Some(&b'\n') {
            all.push(b'\n');
        }
        Some(all)
    }
}

/// Iterate the lines of a chunk of whole lines (each without its `\n`).
pub fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// What the pipeline takes from the queue: lines, or the note that lines were dropped here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Whole lines, each ending with `\n`.
    Lines(Vec<u8>),
    /// Lines the queue had to drop, in stream order with the lines around them: how many,
    /// and the range of the audit serials they carried (so the pipeline does not count the
    /// serials *we* dropped as lost by the kernel).
    Dropped {
        lines: u64,
        serials: Option<(u64, u64)>,
    },
}

/// The range of kernel serials of the records in a chunk of lines (DAEMON_* records carry
/// auditd's own counter and are left out). Only run on chunks that are dropped.
pub fn serial_range(chunk: &[u8]) -> Option<(u64, u64)> {
    let mut range: Option<(u64, u64)> = None;
    for line in lines(chunk) {
        let Ok(r) = super::parse::Record::parse(line) else {
            continue;
        };
        if r.type_name.starts_with(b"DAEMON_") {
            continue;
        }
        let s = r.id.serial;
        range = Some(match range {
            None => (s, s),
            Some((lo, hi)) => (lo.min(s), hi.max(s)),
        });
    }
    range
}

fn merge_ranges(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some((l1, h1)), Some((l2, h2))) => Some((l1.min(l2), h1.max(h2))),
        (x, None) | (None, x) => x,
    }
}

/// A queue of line chunks, bounded in bytes, between the socket reader and the pipeline.
///
/// `push` never waits: when the chunk does not fit it is refused, and the caller records
/// the drop with [`LineQueue::push_dropped`], which takes no room: a drop note right behind
/// another one is merged into it, so there is at most one note per chunk of lines.
/// `pop` waits for a chunk or for the queue to be closed.
#[derive(Debug)]
pub struct LineQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueInner {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    closed: bool,
}

impl LineQueue {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(LineQueue {
            inner: Mutex::new(QueueInner::default()),
            notify: Notify::new(),
            max_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        // A poisoned lock only means another thread panicked while holding it; the queue's
        // data is still consistent (every update is a single push/pop).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a chunk; `Err(chunk)` when it does not fit.
    pub fn push(&self, chunk: Vec<u8>) -> Result<(), Vec<u8>> {
        {
            let mut q = self.lock();
            if q.bytes + chunk.len() > self.max_bytes {
                return Err(chunk);
            }
            q.bytes += chunk.len();
            q.chunks.push_back(Chunk::Lines(chunk));
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Note, in stream order, that lines were dropped.
    pub fn push_dropped(&self, lines: u64, serials: Option<(u64, u64)>) {
        {
            let mut q = self.lock();
            if let Some(Chunk::Dropped {
                lines: l,
                serials: s,
            }) = q.chunks.back_mut()
            {
                *l += lines;
                *s = merge_ranges(*s, serials);
            } else {
                q.chunks.push_back(Chunk::Dropped { lines, serials });
            }
        }
        self.notify.notify_one();
    }

    /// Take the next chunk, waiting for one; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Chunk> {
        loop {
            let notified = self.notify.notified();
            if let Some(c) = self.try_pop() {
                return Some(c);
            }
            if self.lock().closed {
                return None;
            }
            notified.await;
        }
    }

    /// Take the next chunk if there is one.
    pub fn try_pop(&self) -> Option<Chunk> {
        let mut q = self.lock();
        let c = q.chunks.pop_front()?;
        if let Chunk::Lines(l) = &c {
            q.bytes -= l.len();
        }
        Some(c)
    }

    /// No more chunks will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The queue's part of the counters snapshot: the bytes waiting now.
    pub fn fill(&self, s: &mut Snapshot) {
        s.queue_bytes = self.bytes() as u64;
    }
}

/// A connection that ends sooner than this after it was made counts as a failed attempt for
/// the back-off, whether or not it delivered lines: auditd keeps its client connected for
/// as long as it runs (a second client waits, it is not closed), so a peer that closes within
/// a second is broken or not auditd, and lines do not make 100 k reconnects a second right.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(1);

/// Capped exponential back-off of the reconnections: a pure state machine.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// An attempt failed: how long to wait before the next one (doubling, up to the max).
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.checked_mul(2).unwrap_or(self.max).min(self.max);
        wait
    }

    /// A connection made `lasted` ago ended: the wait before reconnecting when it was too
    /// short to count as a success, `None` (reconnect at once, back-off reset) when it lasted.
    pub fn ended(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted < STABLE_CONNECTION {
            Some(self.failed())
        } else {
            self.next = self.min;
            None
        }
    }
}

/// The state of the socket connection, logged once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    Connected,
    /// The socket file does not exist (auditd not running, plugin inactive, wrong path).
    NoSocket,
    /// connect() needs write permission on the `srw-r-----` socket.
    PermissionDenied,
    /// The file exists but nobody listens (auditd stopped without removing it).
    Refused,
    /// The connection ended (auditd stopped or restarted).
    Closed,
    /// Connections end as soon as they are made (a peer that accepts and closes).
    Flapping,
    Other,
}

impl SocketState {
    fn from_error(e: &io::Error) -> SocketState {
        match e.kind() {
            io::ErrorKind::NotFound => SocketState::NoSocket,
            io::ErrorKind::PermissionDenied => SocketState::PermissionDenied,
            io::ErrorKind::ConnectionRefused => SocketState::Refused,
            _ => SocketState::Other,
        }
    }
}

/// Settings of the socket reader.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_line: usize,
}

/// Read auditd's af_unix socket forever, reconnecting, into `queue`.
///
/// Returns only when `stop` is notified.
pub async fn read_socket(
    cfg: SocketConfig,
    queue: Arc<LineQueue>,
    stats: Arc<SourceStats>,
    stop: Arc<Notify>,
) {
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
    let mut last_state: Option<SocketState> = None;
    let mut splitter = LineSplitter::new(cfg.max_line);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let conn = tokio::select! {
            c = UnixStream::connect(&cfg.path) => c,
            _ = stop.notified() => return,
        };
        // auditd re-creates the socket on every restart, and its 3.0 plugin serves one client
        // at a time: a second client is accepted by the kernel but gets no data until the
        // first leaves.
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                let state = SocketState::from_error(&e);
                if last_state != Some(state) {
                    log_state(state, &cfg.path, Some(&e));
                    last_state = Some(state);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.failed()) => {}
                    _ = stop.notified() => return,
                }
                continue;
            }
        };
        SourceStats::add(&stats.connects, 1);
        let connected_at = Instant::now();
        // While connections flap, "connected" is said only once one delivers data: the state
        // lines stay one per change, not two per attempt.
        let mut said_connected = last_state != Some(SocketState::Flapping);
        if said_connected {
            log_state(SocketState::Connected, &cfg.path, None);
        }
        let end = loop {
            let n = tokio::select! {
                r = stream.read(&mut buf) => r,
                _ = stop.notified() => return,
            };
            match n {
                Ok(0) => break None,
                Ok(n) => {
                    if !said_connected {
                        said_connected = true;
                        log_state(SocketState::Connected, &cfg.path, None);
                    }
                    let data = buf.get(..n).unwrap_or_default();
                    SourceStats::add(&stats.bytes_read, n as u64);
                    let over = splitter.feed(data);
                    if over > 0 {
                        SourceStats::add(&stats.oversized_lines, over);
                        tracing::warn!(
                            error_id = "W-AUDIT-LONGLINE",
                            lines = over,
                            limit = cfg.max_line,
                            "over-long audit line skipped"
                        );
                    }
                    if let Some(chunk) = splitter.take_ready() {
                        let nlines = memchr::memchr_iter(b'\n', &chunk).count() as u64;
                        SourceStats::add(&stats.lines_read, nlines);
                        // auditd 3.0's dispatcher writes with a *blocking* `write()`: a reader
                        // that stops draining stalls auditd, and through the kernel's backlog
                        // every audited syscall. So a full queue drops the chunk here, never
                        // leaving it in the socket.
                        if let Err(chunk) = queue.push(chunk) {
                            let first =
                                stats.lines_dropped.fetch_add(nlines, Ordering::Relaxed) == 0;
                            SourceStats::add(&stats.bytes_dropped, chunk.len() as u64);
                            queue.push_dropped(nlines, serial_range(&chunk));
                            if first {
                                tracing::warn!(
                                    error_id = "W-AUDIT-BEHIND",
                                    lines = nlines,
                                    queue_bytes = queue.bytes(),
                                    "pipeline behind: audit lines dropped to keep draining auditd's socket (counted)"
                                );
                            }
                        }
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if splitter.reset() {
            SourceStats::add(&stats.partial_lines, 1);
        }
        let lasted = connected_at.elapsed();
        match backoff.ended(lasted) {
            None => {
                // A connection that lasted is always worth a line when it closes; the next
                // failure to reconnect is logged once more only if it differs from "closed".
                log_state(SocketState::Closed, &cfg.path, end.as_ref());
                last_state = Some(SocketState::Closed);
            }
            Some(wait) => {
                SourceStats::add(&stats.short_connections, 1);
                if last_state != Some(SocketState::Flapping) {
                    let error = end.as_ref().map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(
                        error_id = "W-AUDIT-FLAPPING",
                        path = %cfg.path.display(),
                        lasted_ms = u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX),
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        %error,
                        "the audit socket's peer closed the connection at once: backing off (said once while it goes on)"
                    );
                    last_state = Some(SocketState::Flapping);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.notified() => return,
                }
            }
        }
    }
}

fn log_state(state: SocketState, path: &std::path::Path, err: Option<&io::Error>) {
    let path = path.display();
    let err = err.map(|e| e.to_string()).unwrap_or_default();
    match state {
        SocketState::Connected => tracing::info!(%path, "connected to auditd's af_unix socket"),
        SocketState::NoSocket => tracing::warn!(
            error_id = "E-AUDIT-NOSOCKET",
            %path,
            "no audit socket: is auditd running with its af_unix plugin active (format = string)? retrying"
        ),
        SocketState::PermissionDenied => tracing::error!(
            error_id = "E-AUDIT-PERMISSION",
            %path,
            "permission denied on the audit socket: connecting needs write permission on it (run as root or fix the socket mode); retrying"
        ),
        SocketState::Refused => {
            tracing::warn!(error_id = "E-AUDIT-REFUSED", %path, "audit socket refused the connection: auditd is not listening; retrying")
        }
        SocketState::Closed | SocketState::Flapping => {
            tracing::warn!(error_id = "E-AUDIT-CLOSED", %path, error = %err, "audit socket closed (auditd stopped or restarted); reconnecting")
        }
        SocketState::Other => {
            tracing::warn!(error_id = "E-AUDIT-CONNECT", %path, error = %err, "cannot connect to the audit socket; retrying")
        }
    }
}

/// Read audit.log text from a reader, line by line, calling `f` for each bounded line.
/// Returns the number of over-long lines skipped.
pub fn read_lines<R: BufRead>(
    mut r: R,
    max_line: usize,
    mut f: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut splitter = LineSplitter::new(max_line);
    let mut oversized = 0;
    loop {
        let data = r.fill_buf()?;
        if data.is_empty() {
            break;
        }
        let n = data.len();
        oversized += splitter.feed(data);
        r.consume(n);
        if let Some(chunk) = splitter.take_ready() {
            lines(&chunk).for_each(&mut f);
        }
    }
    if let Some(chunk) = splitter.finish() {
        lines(&chunk).for_each(&mut f);
    }
    Ok(oversized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, u64) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut over = 0;
        for d in data {
            over += s.feed(d);
            if let Some(c) = s.take_ready() {
                out.extend(lines(&c).map(<[u8]>::to_vec));
            }
        }
        if let Some(c) = s.finish() {
            out.extend(lines(&c).map(<[u8]>::to_vec));
        }
        (out, over)
    }

    #[test]
    fn splits_across_reads() {
        let (l, over) = collect(&[b"type=A x", b"=1\ntype=B", b" y=2\n", b"tail"], 100);
        assert_eq!(
            l,
            vec![
                b"type=A x=1".to_vec(),
                b"type=B y=2".to_vec(),
                b"tail".to_vec()
            ]
        );
        assert_eq!(over, 0);
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let long = vec![b'x'; 50];
        let mut a = b"ok1\n".to_vec();
        a.extend_from_slice(&long);
        // The long line ends in a later read.
        let (l, over) = collect(&[&a, b"xxxx\nok2\n"], 20);
        assert_eq!(l, vec![b"ok1".to_vec(), b"ok2".to_vec()]);
        assert_eq!(over, 1);
        // A long line complete in one read, between short ones.
        let mut b = b"ok1\n".to_vec();
        b.extend_from_slice(&long);
        b.extend_from_slice(b"\nok2\n");
        let (l, over) = collect(&[&b], 20);
        assert_eq!(l, vec![b"ok1".to_vec(), b"ok2".to_vec()]);
        assert_eq!(over, 1);
    }

    #[test]
    fn reset_forgets_partial_line() {
        let mut s = LineSplitter::new(100);
        s.feed(b"a\nparti");
        assert!(s.reset());
        assert_eq!(s.take_ready(), Some(b"a\n".to_vec()));
        s.feed(b"b\n");
        assert_eq!(s.take_ready(), Some(b"b\n".to_vec()));
        assert!(!s.reset());
    }

    /// Each source counter lands in its own field, and `queue_bytes` is what waits in the
    /// queue now (it was a hard-coded 0 on the statistics line).
    #[test]
    fn the_source_and_its_queue_fill_their_part_of_the_snapshot() {
        let stats = SourceStats::default();
        for (c, n) in [
            (&stats.bytes_read, 1),
            (&stats.lines_read, 2),
            (&stats.lines_dropped, 3),
            (&stats.bytes_dropped, 4),
            (&stats.oversized_lines, 5),
            (&stats.partial_lines, 6),
            (&stats.connects, 7),
            (&stats.short_connections, 8),
        ] {
            SourceStats::add(c, n);
        }
        let q = LineQueue::new(100);
        q.push(vec![b'x'; 6]).unwrap();
        q.push(vec![b'y'; 5]).unwrap();
        let mut s = Snapshot::default();
        stats.fill(&mut s);
        q.fill(&mut s);
        let expected = Snapshot {
            bytes_read: 1,
            lines_read: 2,
            lines_dropped_queue_full: 3,
            bytes_dropped_queue_full: 4,
            oversized_lines: 5,
            partial_lines: 6,
            audit_connects: 7,
            short_connections: 8,
            queue_bytes: 11,
            ..Snapshot::default()
        };
        assert_eq!(s, expected);
        q.try_pop();
        q.fill(&mut s);
        assert_eq!(s.queue_bytes, 5);
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let q = LineQueue::new(10);
        assert!(q.push(vec![0; 6]).is_ok());
        assert_eq!(q.push(vec![0; 6]), Err(vec![0; 6]));
        assert!(q.push(vec![0; 4]).is_ok());
        assert_eq!(q.bytes(), 10);
        assert_eq!(q.try_pop(), Some(Chunk::Lines(vec![0; 6])));
        assert_eq!(q.bytes(), 4);
    }

    #[test]
    fn drop_notes_keep_their_place_and_merge() {
        let q = LineQueue::new(100);
        q.push(b"a\n".to_vec()).unwrap();
        q.push_dropped(2, Some((10, 11)));
        q.push_dropped(3, Some((5, 20)));
        q.push(b"b\n".to_vec()).unwrap();
        q.push_dropped(1, None);
        assert_eq!(q.try_pop(), Some(Chunk::Lines(b"a\n".to_vec())));
        assert_eq!(
            q.try_pop(),
            Some(Chunk::Dropped {
                lines: 5,
                serials: Some((5, 20))
            })
        );
        assert_eq!(q.try_pop(), Some(Chunk::Lines(b"b\n".to_vec())));
        assert_eq!(
            q.try_pop(),
            Some(Chunk::Dropped {
                lines: 1,
                serials: None
            })
        );
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn serial_range_of_a_chunk() {
        let chunk = b"type=SYSCALL msg=audit(1.000:7): a=1\ntype=DAEMON_END msg=audit(1.000:2): x\ngarbage\ntype=EOE msg=audit(1.000:5):\n";
        assert_eq!(serial_range(chunk), Some((5, 7)));
        assert_eq!(serial_range(b"garbage\n"), None);
    }

    #[test]
    fn read_lines_from_text() {
        let text = b"l1\r\nl2\n\nl3";
        let mut got = Vec::new();
        let over = read_lines(&text[..], 100, |l| got.push(l.to_vec())).unwrap();
        assert_eq!(over, 0);
        assert_eq!(got, vec![b"l1\r".to_vec(), b"l2".to_vec(), b"l3".to_vec()]);
    }

    #[test]
    fn backoff_grows_on_failures_and_short_connections_and_resets_on_a_lasting_one() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1_000));
        assert_eq!(b.failed(), ms(100));
        assert_eq!(b.ended(ms(0)), Some(ms(200)));
        assert_eq!(b.ended(STABLE_CONNECTION - ms(1)), Some(ms(400)));
        assert_eq!(b.failed(), ms(800));
        assert_eq!(b.failed(), ms(1_000));
        assert_eq!(b.ended(ms(5)), Some(ms(1_000)));
        assert_eq!(b.ended(STABLE_CONNECTION), None);
        assert_eq!(b.failed(), ms(100));
        // No overflow at the top of the range.
        let mut b = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        b.failed();
        assert_eq!(b.failed(), Duration::MAX);
    }

    /// A tracing subscriber writing into a buffer, for the log lines of one test.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl LogBuf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn a_peer_that_accepts_and_closes_at_once_is_backed_off() {
        let log = LogBuf::default();
        let writer = log.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepts = Arc::new(AtomicU64::new(0));
        let peer = {
            let accepts = accepts.clone();
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    accepts.fetch_add(1, Ordering::Relaxed);
                    drop(conn);
                }
            })
        };
        let queue = LineQueue::new(1 << 20);
        let stats = Arc::new(SourceStats::default());
        let stop = Arc::new(Notify::new());
        let cfg = SocketConfig {
            path,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            max_line: 1000,
        };
        let task = tokio::spawn(read_socket(cfg, queue, stats.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        peer.abort();
        // Waits of 0.1, 0.2, 0.4, 0.8, 1, 1 s: at most 7 connections in 3 s.
        let connects = stats.connects.load(Ordering::Relaxed);
        assert!((2..=7).contains(&connects), "{connects} connections in 3 s");
        assert!(accepts.load(Ordering::Relaxed) <= 7);
        assert_eq!(stats.short_connections.load(Ordering::Relaxed), connects);
        // One "connected" and one "flapping" line, whatever the number of attempts. (The
        // "connected" one can be missed here: its call site is shared with tests on other
        // threads, and tracing may cache it as disabled while they run with no subscriber.)
        let text = log.text();
        assert_eq!(text.matches("W-AUDIT-FLAPPING").count(), 1, "{text}");
        assert!(text.matches("connected to auditd").count() <= 1, "{text}");
        assert!(text.lines().count() <= 2, "{text}");
    }

    #[tokio::test]
    async fn a_connection_that_lasted_is_followed_by_a_prompt_reconnect() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let queue = LineQueue::new(1 << 20);
        let stats = Arc::new(SourceStats::default());
        let stop = Arc::new(Notify::new());
        // A back-off this long would make the second accept below time out.
        let cfg = SocketConfig {
            path,
            reconnect_min: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(120),
            max_line: 1000,
        };
        let task = tokio::spawn(read_socket(cfg, queue.clone(), stats.clone(), stop.clone()));
        let accept = || async {
            tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .expect("the reader connects without waiting")
                .unwrap()
                .0
        };
        let mut conn = accept().await;
        conn.write_all(b"type=EOE msg=audit(1.000:1):\n")
            .await
            .unwrap();
        tokio::time::sleep(STABLE_CONNECTION + Duration::from_millis(200)).await;
        drop(conn);
        let _second = accept().await;
        // The reader counts its connection once connect() returns: wait for it (bounded).
        for _ in 0..500 {
            if stats.connects.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.connects.load(Ordering::Relaxed), 2);
        assert_eq!(stats.short_connections.load(Ordering::Relaxed), 0);
        assert_eq!(
            queue.try_pop(),
            Some(Chunk::Lines(b"type=EOE msg=audit(1.000:1):\n".to_vec()))
        );
        stop.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn socket_reader_reconnects_and_drains() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let queue = LineQueue::new(1 << 20);
        let stats = Arc::new(SourceStats::default());
        let stop = Arc::new(Notify::new());
        let cfg = SocketConfig {
            path: path.clone(),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(40),
            max_line: 1000,
        };
        let task = tokio::spawn(read_socket(cfg, queue.clone(), stats.clone(), stop.clone()));
        // No socket yet: the reader keeps trying.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for round in 0..2 {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(format!("type=EOE msg=audit(1.0:{round}):\npart").as_bytes())
                .await
                .unwrap();
            drop(conn);
            drop(listener);
            std::fs::remove_file(&path).unwrap();
            let chunk = tokio::time::timeout(Duration::from_secs(5), queue.pop())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                chunk,
                Chunk::Lines(format!("type=EOE msg=audit(1.0:{round}):\n").into_bytes())
            );
        }
        // Wait until the second close is seen.
        for _ in 0..100 {
            if stats.partial_lines.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.connects.load(Ordering::Relaxed), 2);
        assert_eq!(stats.lines_read.load(Ordering::Relaxed), 2);
        assert_eq!(stats.partial_lines.load(Ordering::Relaxed), 2);
        stop.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}

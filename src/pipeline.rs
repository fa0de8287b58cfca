//! The synchronous audit pipeline shared by `run` and `replay`: lines → records → audit
//! events → security events. No I/O and no clock: the caller passes a monotonic time for
//! the idle timeouts of the live socket (replay never ticks, it flushes at the end).

use serde::Serialize;

use crate::audit::coalesce::{AuditEvent, CoalesceStats, Coalescer};
use crate::audit::parse::ParseError;
use crate::config::settings::Settings;
use crate::config::stages;
use crate::events::{DeriveStats, Deriver, SecurityEvent};
use crate::stats::Snapshot;

/// The rule key the module's audit rules carry.
pub const RULE_KEY: &[u8] = b"azureiotsecurity";
/// The key as it stands in a SYSCALL record.
const RULE_KEY_FIELD: &[u8] = b" key=\"azureiotsecurity\"";

/// Counters of the pipeline.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PipelineStats {
    pub lines: u64,
    /// Lines that are not UTF-8 (auditd writes ASCII: the kernel hex-encodes other bytes).
    pub non_utf8_lines: u64,
    pub coalesce: CoalesceStats,
    pub derive: DeriveStats,
}

impl PipelineStats {
    /// The pipeline's part of the counters snapshot (parse, coalesce, derive).
    pub fn fill(&self, s: &mut Snapshot) {
        let (c, d) = (&self.coalesce, &self.derive);
        s.non_utf8_lines = self.non_utf8_lines;
        s.records_read = c.records;
        s.bad_lines = c.bad_lines;
        s.bad_time_lines = c.bad_time_lines;
        s.audit_events = c.events;
        s.evicted = c.evicted;
        s.estimated_kernel_loss = c.estimated_lost;
        s.security_events = d.events;
        s.process_create = d.process_create;
        s.connection_create = d.connection_create;
        s.login = d.login;
        s.login_evicted = d.login_evicted;
    }
}

/// Lines in, security events out.
#[derive(Debug)]
pub struct Pipeline {
    coalescer: Coalescer,
    deriver: Deriver,
    events: Vec<AuditEvent>,
    non_utf8_lines: u64,
    lines: u64,
    /// Monotonic time of the last record carrying the module's rule key.
    last_rule_key_ms: Option<u64>,
    first_line_ms: Option<u64>,
    bad_line_logged: bool,
    bad_time_logged: bool,
}

impl Pipeline {
    pub fn new(settings: &Settings) -> Self {
        Pipeline {
            coalescer: Coalescer::new(stages::coalesce(&settings.audit)),
            deriver: Deriver::new(&stages::derive(&settings.events)),
            events: Vec::new(),
            non_utf8_lines: 0,
            lines: 0,
            last_rule_key_ms: None,
            first_line_ms: None,
            bad_line_logged: false,
            bad_time_logged: false,
        }
    }

    /// Feed one line (no trailing newline). Security events derived are appended to `out`.
    pub fn push_line(&mut self, line: &[u8], now_ms: u64, out: &mut Vec<SecurityEvent>) {
        self.lines += 1;
        self.first_line_ms.get_or_insert(now_ms);
        if std::str::from_utf8(line).is_err() {
            self.non_utf8_lines += 1;
            if !self.bad_line_logged {
                self.bad_line_logged = true;
                tracing::warn!(
                    error_id = "W-AUDIT-NONUTF8",
                    line = %escaped(line),
                    "skipping a line that is not UTF-8 (counted; further ones are only counted)"
                );
            }
            return;
        }
        if let Err(e) = self.coalescer.push(line, now_ms, &mut self.events) {
            self.log_bad_line(line, e);
        }
        self.derive_pending(now_ms, out);
    }

    fn log_bad_line(&mut self, line: &[u8], e: ParseError) {
        if e == ParseError::TimeOutOfRange {
            if !self.bad_time_logged {
                self.bad_time_logged = true;
                tracing::warn!(
                    error_id = "W-AUDIT-TIME",
                    line = %escaped(line),
                    "skipping an audit record dated after the year 9999: no message can carry its time (counted in bad_time_lines; further ones are only counted)"
                );
            }
            return;
        }
        if !self.bad_line_logged {
            self.bad_line_logged = true;
            tracing::warn!(
                error_id = "W-AUDIT-GARBAGE",
                error = %e,
                line = %escaped(line),
                "skipping a line that is not an audit record (counted; further ones are only counted)"
            );
        }
    }

    fn derive_pending(&mut self, now_ms: u64, out: &mut Vec<SecurityEvent>) {
        for ev in self.events.drain(..) {
            // One substring search instead of walking the SYSCALL record's fields a second
            // time (the deriver walks them): ` key="…"` cannot appear inside another value,
            // since the kernel hex-encodes any value with a space or a quote.
            let keyed = ev.records().any(|r| {
                r.rtype == crate::audit::types::SYSCALL
                    && memchr::memmem::find(r.body, RULE_KEY_FIELD).is_some()
            });
            if keyed {
                self.last_rule_key_ms = Some(now_ms);
            }
            self.deriver.derive(&ev, out);
            // Hand the buffers back: the steady state allocates nothing per event.
            self.coalescer.recycle(ev);
        }
    }

    /// Monotonic time since a record with the module's rule key was last seen (or since the
    /// first line, when none was): the app warns when the rules seem not to be loaded.
    pub fn ms_without_rule_key(&self, now_ms: u64) -> Option<u64> {
        let since = self.last_rule_key_ms.or(self.first_line_ms)?;
        Some(now_ms.saturating_sub(since))
    }

    /// Lines were dropped before reaching us (the reader's queue was full), carrying these
    /// kernel serials: they are our loss, counted by the reader, not the kernel's.
    pub fn dropped_upstream(&mut self, serials: Option<(u64, u64)>) {
        if let Some((lo, hi)) = serials {
            tracing::debug!(lo, hi, "serials dropped by our queue");
            self.coalescer.mark_seen(lo, hi);
        }
    }

    /// Complete idle events (live socket only).
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<SecurityEvent>) {
        self.coalescer.tick(now_ms, &mut self.events);
        self.derive_pending(now_ms, out);
        self.deriver.tick(out);
    }

    /// Complete everything in flight (end of input, shutdown).
    pub fn flush(&mut self, out: &mut Vec<SecurityEvent>) {
        self.coalescer.flush(&mut self.events);
        self.derive_pending(u64::MAX, out);
        self.deriver.flush(out);
    }

    /// Drops upstream of the outgoing queues (the socket queue's are added by `run`).
    pub fn upstream_drops(&self) -> crate::outgoing::UpstreamDrops {
        let c = self.coalescer.stats();
        crate::outgoing::UpstreamDrops {
            socket_queue_lines: 0,
            coalescer_evicted: c.evicted,
            estimated_kernel_loss: c.estimated_lost,
        }
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            lines: self.lines,
            non_utf8_lines: self.non_utf8_lines,
            coalesce: self.coalescer.stats().clone(),
            derive: self.deriver.stats().clone(),
        }
    }
}

/// The first 200 bytes of a bad line, fit for a log line: invalid UTF-8 as U+FFFD, and
/// control characters (C0, DEL, C1) and the backslash escaped (`\x1b`, `\x00`, `\r`,
/// `\u{85}`, `\\`), so that a garbage line cannot move the terminal's cursor, forge a
/// log line of its own with a CR or LF, or hide its bytes.
pub fn escaped(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line.get(..200).unwrap_or(line));
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pipeline counter lands in its own field of the snapshot, and nothing else is
    /// touched.
    #[test]
    fn the_pipeline_fills_its_part_of_the_snapshot() {
        let stats = PipelineStats {
            lines: 100,
            non_utf8_lines: 1,
            coalesce: CoalesceStats {
                records: 2,
                bad_lines: 3,
                bad_time_lines: 4,
                events: 5,
                evicted: 6,
                estimated_lost: 7,
                completed_eoe: 99,
                ..CoalesceStats::default()
            },
            derive: DeriveStats {
                events: 8,
                process_create: 9,
                connection_create: 10,
                login: 11,
                login_evicted: 12,
                exec_without_argv: 99,
                ..DeriveStats::default()
            },
        };
        let mut s = Snapshot::default();
        stats.fill(&mut s);
        let expected = Snapshot {
            non_utf8_lines: 1,
            records_read: 2,
            bad_lines: 3,
            bad_time_lines: 4,
            audit_events: 5,
            evicted: 6,
            estimated_kernel_loss: 7,
            security_events: 8,
            process_create: 9,
            connection_create: 10,
            login: 11,
            login_evicted: 12,
            ..Snapshot::default()
        };
        assert_eq!(s, expected);
    }

    #[test]
    fn control_bytes_of_bad_lines_are_escaped() {
        assert_eq!(
            escaped(b"a\x1b[2Jb\x00c\rd\ne\tf\x7fg\\h\xc2\x85i\xffj"),
            "a\\x1b[2Jb\\x00c\\rd\\ne\\tf\\x7fg\\\\h\\u{85}i\u{fffd}j"
        );
        assert_eq!(escaped(&[b'x'; 300]).len(), 200);
        assert_eq!(escaped("type=SYSCALL é".as_bytes()), "type=SYSCALL é");
    }

    #[test]
    fn a_huge_argc_with_few_arguments_gives_the_arguments_present() {
        let mut p = Pipeline::new(&Settings::default());
        let mut out = Vec::new();
        // Synthetic: an execve whose EXECVE record claims a million arguments and has one.
        for line in [
            &b"type=SYSCALL msg=audit(1700000000.000:9): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=42 uid=0 comm=\"x\" exe=\"/usr/bin/x\" key=\"azureiotsecurity\""[..],
            b"type=EXECVE msg=audit(1700000000.000:9): argc=1000000 a0=\"x\"",
            b"type=EOE msg=audit(1700000000.000:9):",
        ] {
            p.push_line(line, 0, &mut out);
        }
        p.flush(&mut out);
        assert_eq!(out.len(), 1);
        let crate::events::Payload::ProcessCreate(pc) = &out[0].payload else {
            panic!("{:?}", out[0]);
        };
        assert_eq!(pc.command_line, "x");
        let extra = |k| pc.extra_details.get(k).map(String::as_str);
        assert_eq!(extra("ArgumentsMissing"), Some("999999"));
        assert_eq!(extra("CommandLineIncomplete"), Some("true"));
        assert_eq!(extra("CommandLineTruncated"), None);
    }

    #[test]
    fn records_with_the_rule_key_are_noticed() {
        let mut p = Pipeline::new(&Settings::default());
        let mut out = Vec::new();
        p.push_line(b"type=SYSCALL msg=audit(1.000:1): arch=c000003e syscall=59 success=yes exit=0 pid=1 comm=\"x\" key=\"other\"", 0, &mut out);
        p.push_line(b"type=EOE msg=audit(1.000:1):", 0, &mut out);
        assert_eq!(p.ms_without_rule_key(5_000), Some(5_000));
        p.push_line(b"type=SYSCALL msg=audit(1.000:2): arch=c000003e syscall=59 success=yes exit=0 pid=1 comm=\"x\" key=\"azureiotsecurity\"\x1dARCH=x86_64", 3_000, &mut out);
        p.push_line(b"type=EOE msg=audit(1.000:2):", 3_000, &mut out);
        assert_eq!(p.ms_without_rule_key(5_000), Some(2_000));
    }
}

//! A replay source in auditd's place: a unix socket that serves captured audit text to the
//! module the way auditd's af_unix plugin does (one client, the stream stays open). Used by
//! the tests that are about the AMQP side and need events without the real auditd.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct AuditFeed {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditFeed {
    /// Serve `text` to each client that connects to `dir/audit.sock`, then keep the
    /// connection open until the feed is dropped.
    pub fn start(dir: &Path, text: Vec<u8>) -> AuditFeed {
        Self::paced(dir, text, Duration::ZERO)
    }

    /// Like [`AuditFeed::start`], but the lines are spread evenly over `over`: a steady
    /// load instead of a burst.
    pub fn paced(dir: &Path, text: Vec<u8>, over: Duration) -> AuditFeed {
        let path = dir.join("audit.sock");
        let listener = UnixListener::bind(&path).expect("bind the audit feed socket");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut clients = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        if over.is_zero() {
                            let _ = c.write_all(&text);
                        } else {
                            let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
                            let gap = over / u32::try_from(lines.len().max(1)).unwrap_or(1);
                            for l in lines {
                                if s.load(Ordering::Relaxed) || c.write_all(l).is_err() {
                                    break;
                                }
                                std::thread::sleep(gap);
                            }
                        }
                        clients.push(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        AuditFeed {
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AuditFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

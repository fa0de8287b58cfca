//! The durable outbox: the [`Store`] in SQLite, in the module's data directory (a volume in
//! the deployment manifest), so that what the module committed survives a restart, an update
//! or a kill.
//!
//! - WAL with `synchronous=FULL`: a commit is on disk when it returns. Writes are grouped in
//!   one transaction until [`Store::commit`] (the delivery stage calls it every tick) or until
//!   a message is built or read for sending: nothing is sent that is not committed, and an
//!   event costs no fsync of its own.
//! - Pending events keep their queue and order (an autoincrement sequence), messages their
//!   id: a message sent again after a restart carries the same message-id.
//! - The cap (`maxLocalCacheSizeInBytes`) is on real disk use: the database file and its
//!   WAL. The drop rule ([`super::policy`]) works on the stored JSON, so the JSON gets a
//!   share of the cap (`json_budget`) that leaves room for SQLite's pages, the empty
//!   schema, the WAL and one transaction; the WAL is checkpointed automatically every
//!   `cap / 16` bytes and truncated to that (`journal_size_limit`), and freed pages are returned
//!   (`auto_vacuum=INCREMENTAL`) every [`MAINTAIN_EVERY`] commits and whenever the store
//!   empties, so the file shrinks back. Each commit measures the files; when they are over
//!   the cap anyway (rows larger or smaller than the estimate), the JSON share is lowered to
//!   what the measure says and events are dropped by the same rule, counted.
//! - `locking_mode=EXCLUSIVE`: one process owns the outbox (a second module on the same data
//!   directory is refused, not let to share or to move the file aside), and the WAL needs no
//!   `-shm` file.
//! - The statistics period's counters ([`Counters`]) are one row (`counters`, JSON) that
//!   every transaction rewrites, just before it commits, with the last ones the delivery
//!   stage gave and the drops this store made itself and has not reported yet: a count is
//!   committed with what it counts. Opening reads the row back (a killed run's counts) and
//!   leaves it: the next commit replaces it with the merged counts.
//! - Opening runs `quick_check`; [`open_or_recover`] moves a corrupt file aside and starts
//!   empty, and says what it did so the caller can log it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Counters, Dropped, Pending, Store, StoreError, StoredMessage, policy};
use crate::events::operational::QueueName;

/// Checkpoint and vacuum after this many commits.
pub const MAINTAIN_EVERY: u64 = 64;
const PAGE: usize = 4096;
/// The empty outbox (schema pages) and what rounding to pages costs at least.
const FLOOR: usize = 12 * PAGE;

/// The WAL's share of the cap: checkpointed and truncated at this size.
fn wal_limit(cap: usize) -> usize {
    (cap / 16).max(4 * PAGE)
}

/// What one transaction may add to the WAL before its checkpoint: a tick's events and drops
/// touch a few pages each (leaves at both ends of the table, their parents, the pointer map,
/// the free list), and building a message writes its body (up to 256 KB).
fn transaction_room(cap: usize) -> usize {
    (cap / 8).max(16 * PAGE)
}

/// The share of the cap the stored JSON may take: what is left after the empty schema, the
/// WAL and one transaction, times what rows in pages keep of their JSON (measured with real
/// events of a few hundred bytes, free pages not yet vacuumed included: about 72 %).
fn estimated_share(cap: usize) -> usize {
    cap.saturating_sub(FLOOR + wal_limit(cap) + transaction_room(cap)) / 10 * 7
}

/// The events' budget under `cap`: the estimated share, or [`least_json`] when that is less
/// (and W-OUTBOX-SMALL said).
fn json_budget(cap: usize) -> usize {
    if cap_too_small(cap) {
        tracing::warn!(
            error_id = "W-OUTBOX-SMALL",
            cap,
            events_budget = least_json(cap),
            "maxLocalCacheSizeInBytes is too small for the outbox on disk (the empty file alone takes 32 KB; about 220 KB are needed to stay under it): events get the budget they would have in memory and the files go over the cap"
        );
    }
    estimated_share(cap).max(least_json(cap))
}

/// The events' share never goes below this: under about 220 KB the cap cannot hold the
/// empty outbox, its WAL and a useful share of events, and an outbox that drops every event
/// would send nothing even with edgeHub there. Such a cap gets the budget the memory store
/// would have (up to 64 KB), the disk goes over the cap, and opening says so (W-OUTBOX-SMALL).
fn least_json(cap: usize) -> usize {
    cap.min(64 * 1024)
}

/// The cap is below what the outbox needs to stay under it.
fn cap_too_small(cap: usize) -> bool {
    estimated_share(cap) < least_json(cap)
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("SQLite: {e}"))
}

fn queue_code(q: QueueName) -> i64 {
    match q {
        QueueName::High => 0,
        QueueName::Low => 1,
    }
}

/// The outbox file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Mirrors of the pending rows: (sequence, JSON length, statistics?), oldest first.
    high: VecDeque<(i64, usize, bool)>,
    low: VecDeque<(i64, usize, bool)>,
    /// Bytes of stored JSON (pending, messages and the windows checkpoint).
    bytes: usize,
    /// Of which the windows checkpoint.
    window_bytes: usize,
    messages: usize,
    /// The cap on disk use (None: no measuring, the JSON budget alone; for tests).
    cap: Option<usize>,
    /// The JSON budget under the cap.
    json_max: usize,
    /// The WAL's share of the cap.
    wal_limit: usize,
    /// Dropped at a commit to bring the files under the cap: reported by the next add.
    shrink_dropped: Dropped,
    in_tx: bool,
    commits: u64,
    /// Events added since the last commit: lost if the commit fails.
    uncommitted: Dropped,
    /// Aggregation entries a killed run left in its checkpoint, now pending events.
    restored_window_events: usize,
    /// The period's counters as last given ([`Store::stage_counters`]).
    counters: Counters,
    /// What the `counters` row holds now (None: unknown, the next commit writes it).
    counters_written: Option<Counters>,
    /// The row a previous run left, until the delivery stage takes it.
    restored_counters: Option<Counters>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

/// What [`open_or_recover`] had to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The file was fine (or new).
    Clean,
    /// The file was corrupt: moved to `moved_to`, and a new one started.
    MovedAside { moved_to: PathBuf, reason: String },
}

/// Checkpoint the WAL when it reaches `limit` bytes and truncate it to that.
fn configure_wal(conn: &Connection, limit: usize) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_size_limit", limit as i64)
        .map_err(open_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", (limit / PAGE).max(1) as i64)
        .map_err(open_err)?;
    Ok(())
}

/// Locked by another process: not a corrupt file.
fn locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn open_err(e: rusqlite::Error) -> StoreError {
    if locked(&e) {
        StoreError::Locked(format!(
            "SQLite: {e} (another process has the outbox open: one module per data directory)"
        ))
    } else {
        db(e)
    }
}

impl SqliteStore {
    /// Open (or create) the outbox at `path`, capped at `cap` bytes on disk, and check it.
    pub fn open(path: &Path, cap: usize) -> Result<SqliteStore, StoreError> {
        let mut s = SqliteStore::open_with(path, json_budget(cap), wal_limit(cap))?;
        s.cap = Some(cap);
        Ok(s)
    }

    /// The outbox with a budget on its JSON only, the disk not measured (the drop rule's
    /// tests, which need budgets far below what an empty SQLite file takes).
    #[cfg(test)]
    fn open_uncapped(path: &Path, json_max: usize) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, json_max, wal_limit(json_max))
    }

    fn open_with(path: &Path, json_max: usize, wal: usize) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(open_err)?;
        // The WAL's bounds first: what opening writes counts already.
        configure_wal(&conn, wal)?;
        // Exclusive before WAL (no -shm file); auto_vacuum before the first table exists.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        )
        .map_err(open_err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(open_err)?;
        if check != "ok" {
            return Err(StoreError::Backend(format!("quick_check: {check}")));
        }
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS pending (
                 seq INTEGER PRIMARY KEY,
                 queue INTEGER NOT NULL,
                 json TEXT NOT NULL,
                 statistics INTEGER NOT NULL DEFAULT 0);
             DROP INDEX IF EXISTS pending_by_queue;
             CREATE TABLE IF NOT EXISTS windows (
                 seq INTEGER PRIMARY KEY,
                 queue INTEGER NOT NULL,
                 json TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY,
                 message_id TEXT NOT NULL UNIQUE,
                 body TEXT NOT NULL,
                 high_events INTEGER NOT NULL,
                 low_events INTEGER NOT NULL);
             COMMIT;",
        )
        .map_err(db)?;
        // An outbox written before statistics were marked: add the column.
        let has_statistics: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('pending') WHERE name = 'statistics'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        if !has_statistics {
            conn.execute_batch(
                "ALTER TABLE pending ADD COLUMN statistics INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db)?;
        }
        let mut s = SqliteStore {
            conn,
            path: path.to_owned(),
            high: VecDeque::new(),
            low: VecDeque::new(),
            bytes: 0,
            window_bytes: 0,
            messages: 0,
            cap: None,
            json_max,
            wal_limit: wal,
            shrink_dropped: Dropped::default(),
            in_tx: false,
            commits: 0,
            uncommitted: Dropped::default(),
            restored_window_events: 0,
            counters: Counters::default(),
            counters_written: None,
            restored_counters: None,
        };
        s.read_counters()?;
        s.restore_windows()?;
        s.load()?;
        // Start with the WAL empty and the file at its size.
        s.maintain()?;
        Ok(s)
    }

    /// A checkpoint of aggregation windows left by a run that did not stop cleanly: its
    /// entries become pending events (a window cut in two, nothing lost).
    fn restore_windows(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db)?;
        let n = tx
            .execute(
                "INSERT INTO pending (queue, json) SELECT queue, json FROM windows ORDER BY seq",
                [],
            )
            .map_err(db)?;
        tx.execute("DELETE FROM windows", []).map_err(db)?;
        tx.commit().map_err(db)?;
        self.restored_window_events = n;
        Ok(())
    }

    /// The counters row a previous run committed last: the store starts from it (so a commit
    /// before the delivery stage took it keeps it) and hands it back once. A row that does
    /// not decode is reported (W-OUTBOX-COUNTERS) and replaced by the next commit.
    fn read_counters(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS counters (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     json TEXT NOT NULL)",
            )
            .map_err(db)?;
        let row: Option<Result<Counters, String>> = self
            .conn
            .query_row("SELECT json FROM counters WHERE id = 1", [], |r| {
                // Quirk: the column's type is not enforced (a BLOB can be there): read it
                // as whatever it is and decode text only.
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => {
                        serde_json::from_slice::<Counters>(t).map_err(|e| e.to_string())
                    }
                    other => Err(format!("a {:?} value, not JSON text", other.data_type())),
                })
            })
            .optional()
            .map_err(db)?;
        match row {
            None => {}
            Some(Ok(c)) => {
                self.counters = c.clone();
                self.counters_written = Some(c.clone());
                self.restored_counters = Some(c);
            }
            Some(Err(why)) => tracing::warn!(
                error_id = "W-OUTBOX-COUNTERS",
                path = %self.path.display(),
                %why,
                "the statistics counters a previous run left in the outbox do not decode: its last period's counts are not reported"
            ),
        }
        Ok(())
    }

    /// How many aggregation entries of a killed run were restored at open.
    pub fn restored_window_events(&self) -> usize {
        self.restored_window_events
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, queue, length(CAST(json AS BLOB)), statistics FROM pending ORDER BY seq",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?;
        let (mut high, mut low, mut bytes) = (VecDeque::new(), VecDeque::new(), 0usize);
        for row in rows {
            let (seq, queue, len, statistics) = row.map_err(db)?;
            let len = usize::try_from(len).unwrap_or(0);
            bytes += len;
            let entry = (seq, len, statistics != 0);
            if queue == 0 {
                high.push_back(entry);
            } else {
                low.push_back(entry);
            }
        }
        drop(stmt);
        let (count, body_bytes): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0) FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)?;
        self.high = high;
        self.low = low;
        self.bytes = bytes + usize::try_from(body_bytes).unwrap_or(0);
        self.messages = usize::try_from(count).unwrap_or(0);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events added since the last commit.
    pub fn uncommitted(&self) -> Dropped {
        self.uncommitted
    }

    /// Real disk use: the database file and its WAL (and a `-shm` file, which exclusive
    /// locking should never make).
    pub fn disk_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let side = |suffix: &str| {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        size(&self.path) + size(&side("-wal")) + size(&side("-shm"))
    }

    /// The JSON budget the cap currently allows.
    pub fn json_max(&self) -> usize {
        self.json_max
    }

    /// After a commit: when the files are over the cap, give pages back, and if that is not
    /// enough, lower the JSON share to what the measure says and drop by the rule.
    fn enforce_cap(&mut self) -> Result<(), StoreError> {
        let Some(cap) = self.cap else { return Ok(()) };
        if self.disk_bytes() <= cap as u64 {
            return Ok(());
        }
        self.maintain()?;
        let disk = usize::try_from(self.disk_bytes()).unwrap_or(usize::MAX);
        if disk <= cap {
            return Ok(());
        }
        // The rows cost more than estimated: scale the JSON share by what they really take,
        // with 10 % to spare so that this is not done at every commit.
        let scaled = (self.bytes as u128 * cap as u128 / disk.max(1) as u128) as usize;
        let least = least_json(cap);
        self.json_max = self.json_max.min(scaled / 10 * 9).max(least);
        let max = self.json_max;
        let d = policy::make_room(self, 0, max)?;
        tracing::debug!(
            disk,
            cap,
            json_max = max,
            dropped_high = d.high,
            dropped_low = d.low,
            "outbox over its cap on disk: JSON share lowered"
        );
        self.shrink_dropped.high += d.high;
        self.shrink_dropped.low += d.low;
        self.maintain()
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Checkpoint the WAL into the file and give freed pages back.
    pub fn maintain(&mut self) -> Result<(), StoreError> {
        self.commit_tx()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(db)?;
        // Freed pages go back a few at a time, each step checkpointed: moving pages writes
        // them (and their parents) to the WAL, which must stay within its share of the cap.
        let step = (self.wal_limit / PAGE / 4).max(1);
        loop {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .map_err(db)?;
            if free == 0 {
                break;
            }
            // incremental_vacuum frees pages as it is stepped: step it to the end.
            {
                let mut stmt = self
                    .conn
                    .prepare(&format!("PRAGMA incremental_vacuum({step})"))
                    .map_err(db)?;
                let mut rows = stmt.query([]).map_err(db)?;
                while rows.next().map_err(db)?.is_some() {}
            }
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(db)?;
        }
        Ok(())
    }

    /// What the `counters` row must say: the counts given plus the drops this store made
    /// (measuring the disk, making room for the windows checkpoint) that it reports with the
    /// next add.
    fn counters_to_write(&self) -> Counters {
        let mut c = self.counters.clone();
        c.period.dropped_high += self.shrink_dropped.high;
        c.period.dropped_low += self.shrink_dropped.low;
        c
    }

    fn commit_tx(&mut self) -> Result<(), StoreError> {
        let counters = self.counters_to_write();
        let stale = self.counters_written.as_ref() != Some(&counters);
        if stale {
            // Counters changed with nothing else to commit (an event too large to store).
            self.begin()?;
        }
        if self.in_tx {
            if stale {
                let json = serde_json::to_string(&counters)
                    .map_err(|e| StoreError::Backend(format!("the counters as JSON: {e}")))?;
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO counters (id, json) VALUES (1, ?1)",
                        params![json],
                    )
                    .map_err(db)?;
            }
            self.conn.execute_batch("COMMIT").map_err(db)?;
            self.counters_written = Some(counters);
            self.in_tx = false;
            self.commits += 1;
            self.uncommitted = Dropped::default();
        }
        Ok(())
    }

    fn mirror(&self, q: QueueName) -> &VecDeque<(i64, usize, bool)> {
        match q {
            QueueName::High => &self.high,
            QueueName::Low => &self.low,
        }
    }

    fn read_pending(&self, q: QueueName, n: usize) -> Result<Vec<String>, StoreError> {
        let seqs = match q {
            QueueName::High => &self.high,
            QueueName::Low => &self.low,
        };
        let Some(&(last, _, _)) = seqs.get(n.checked_sub(1).unwrap_or(usize::MAX)) else {
            return Ok(Vec::new());
        };
        let first = seqs.front().map(|x| x.0).unwrap_or(last);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT json FROM pending WHERE queue = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![queue_code(q), first, last], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

impl policy::Queues for SqliteStore {
    fn held(&self) -> usize {
        self.bytes
    }
    fn oldest_droppable(&self, q: QueueName) -> Option<usize> {
        self.mirror(q).iter().position(|e| !e.2)
    }
    fn drop_pending(&mut self, q: QueueName, pos: usize) -> Result<(), StoreError> {
        let Some(&(seq, len, _)) = self.mirror(q).get(pos) else {
            return Ok(());
        };
        self.begin()?;
        self.conn
            .execute("DELETE FROM pending WHERE seq = ?1", params![seq])
            .map_err(db)?;
        match q {
            QueueName::High => self.high.remove(pos),
            QueueName::Low => self.low.remove(pos),
        };
        self.bytes -= len;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
        let max = self.json_max;
        let mut admitted = policy::admit(self, &ev, max)?;
        let shrunk = std::mem::take(&mut self.shrink_dropped);
        admitted.dropped.high += shrunk.high;
        admitted.dropped.low += shrunk.low;
        if !admitted.stored {
            return Ok(admitted.dropped);
        }
        let len = ev.json.len();
        self.begin()?;
        self.conn
            .execute(
                "INSERT INTO pending (queue, json, statistics) VALUES (?1, ?2, ?3)",
                params![queue_code(ev.queue), ev.json, ev.statistics],
            )
            .map_err(db)?;
        let seq = self.conn.last_insert_rowid();
        self.uncommitted.add(ev.queue, 1);
        self.bytes += len;
        let entry = (seq, len, ev.statistics);
        match ev.queue {
            QueueName::High => self.high.push_back(entry),
            QueueName::Low => self.low.push_back(entry),
        }
        Ok(admitted.dropped)
    }

    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        self.mirror(q).iter().map(|x| x.1).collect()
    }

    fn pending_bytes(&self, q: QueueName) -> usize {
        self.mirror(q).iter().map(|x| x.1).sum()
    }

    fn pending_statistics(&self) -> usize {
        self.high
            .iter()
            .chain(self.low.iter())
            .filter(|x| x.2)
            .count()
    }

    /// The new value is the cap on disk (as [`SqliteStore::open`]'s), or the JSON budget for
    /// an outbox opened without one.
    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
        match self.cap {
            Some(_) => {
                self.cap = Some(max_bytes);
                self.json_max = json_budget(max_bytes);
                self.wal_limit = wal_limit(max_bytes);
                configure_wal(&self.conn, self.wal_limit)?;
            }
            None => self.json_max = max_bytes,
        }
        let max = self.json_max;
        policy::make_room(self, 0, max)
    }

    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<bool, StoreError> {
        let high = high.min(self.high.len());
        let low = low.min(self.low.len());
        if high + low == 0 {
            return Ok(false);
        }
        let hs = self.read_pending(QueueName::High, high)?;
        let ls = self.read_pending(QueueName::Low, low)?;
        let (a, b) = match first {
            QueueName::High => (&hs, &ls),
            QueueName::Low => (&ls, &hs),
        };
        let events: Vec<&str> = a.iter().chain(b.iter()).map(String::as_str).collect();
        let body = build(&events);
        let freed: usize = events.iter().map(|e| e.len()).sum();
        self.begin()?;
        for (q, n) in [(QueueName::High, high), (QueueName::Low, low)] {
            let seqs = match q {
                QueueName::High => &mut self.high,
                QueueName::Low => &mut self.low,
            };
            if let Some(&(last, _, _)) = seqs.get(n.wrapping_sub(1)) {
                self.conn
                    .execute(
                        "DELETE FROM pending WHERE queue = ?1 AND seq <= ?2",
                        params![queue_code(q), last],
                    )
                    .map_err(db)?;
                seqs.drain(..n);
            }
        }
        self.conn
            .execute(
                "INSERT INTO messages (message_id, body, high_events, low_events) VALUES (?1, ?2, ?3, ?4)",
                params![message_id, body, high as i64, low as i64],
            )
            .map_err(db)?;
        self.bytes = self.bytes - freed + body.len();
        self.messages += 1;
        // A built message is committed before it can be sent.
        self.commit()?;
        Ok(true)
    }

    fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        self.conn
            .query_row(
                "SELECT message_id, body, high_events, low_events FROM messages ORDER BY seq LIMIT 1",
                [],
                stored_message,
            )
            .optional()
            .map_err(db)
    }

    fn ack(&mut self, message_id: &str) -> Result<(), StoreError> {
        self.reject(message_id).map(|_| ())
    }

    fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        let m = self
            .conn
            .query_row(
                "SELECT message_id, body, high_events, low_events FROM messages WHERE message_id = ?1",
                params![message_id],
                stored_message,
            )
            .optional()
            .map_err(db)?;
        let Some(m) = m else { return Ok(None) };
        self.begin()?;
        self.conn
            .execute(
                "DELETE FROM messages WHERE message_id = ?1",
                params![message_id],
            )
            .map_err(db)?;
        self.bytes -= m.body.len();
        self.messages -= 1;
        self.commit()?;
        Ok(Some(m))
    }

    fn message_count(&self) -> usize {
        self.messages
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    /// The checkpoint takes its share of the budget: pending events make room for it by the
    /// rule (they would have been dropped for these entries when the windows close anyway).
    fn checkpoint_windows(&mut self, events: Vec<Pending>) -> Result<(), StoreError> {
        self.begin()?;
        self.conn.execute("DELETE FROM windows", []).map_err(db)?;
        self.bytes -= self.window_bytes;
        let mut size = 0;
        {
            let mut stmt = self
                .conn
                .prepare_cached("INSERT INTO windows (queue, json) VALUES (?1, ?2)")
                .map_err(db)?;
            for e in events {
                size += e.json.len();
                stmt.execute(params![queue_code(e.queue), e.json])
                    .map_err(db)?;
            }
        }
        self.window_bytes = size;
        self.bytes += size;
        let max = self.json_max;
        let d = policy::make_room(self, 0, max)?;
        self.shrink_dropped.high += d.high;
        self.shrink_dropped.low += d.low;
        Ok(())
    }

    fn stage_counters(&mut self, counters: &Counters) {
        self.counters.clone_from(counters);
    }

    fn take_restored_counters(&mut self) -> Option<Counters> {
        self.restored_counters.take()
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let was = self.in_tx;
        self.commit_tx()?;
        let empty = self.bytes == 0;
        if was && (self.commits % MAINTAIN_EVERY == 0 || empty) {
            self.maintain()?;
        }
        if was {
            self.enforce_cap()?;
        }
        Ok(())
    }
}

/// The outbox, falling back to memory when the disk fails under it (full, read-only, gone):
/// the module keeps forwarding rather than stopping. What the file held stays there and is
/// sent after the next start; events of the transaction that failed are counted as dropped.
pub struct Resilient {
    disk: Option<SqliteStore>,
    memory: super::MemoryStore,
    /// Drops to report with the next `add_pending`.
    lost: Dropped,
    /// What to tell upstream about the failure (taken once).
    failure: Option<String>,
}

impl Resilient {
    /// Memory gets the same budget (all of it for JSON: memory has no pages or WAL).
    pub fn new(disk: SqliteStore) -> Resilient {
        let max = disk.cap.unwrap_or(disk.json_max);
        Resilient {
            disk: Some(disk),
            memory: super::MemoryStore::new(max),
            lost: Dropped::default(),
            failure: None,
        }
    }

    /// Still on disk?
    pub fn durable(&self) -> bool {
        self.disk.is_some()
    }

    fn fail(&mut self, e: &StoreError) {
        if let Some(d) = self.disk.take() {
            let lost = d.uncommitted();
            self.lost.high += lost.high;
            self.lost.low += lost.low;
            tracing::error!(
                error_id = "E-OUTBOX-WRITE",
                path = %d.path().display(),
                error = %e,
                lost_high = lost.high,
                lost_low = lost.low,
                "the outbox failed (disk full or read-only?): forwarding from memory from now on; what the file held is sent after a restart"
            );
            self.failure = Some(format!(
                "E-OUTBOX-WRITE: the outbox {} failed ({e}); forwarding from memory, {} High and {} Low events of the failed write lost, what the file held is sent after a restart",
                d.path().display(),
                lost.high,
                lost.low
            ));
        }
    }

    /// Run `op` on the disk store; on failure switch to memory and run it there.
    fn with<T>(
        &mut self,
        op: impl Fn(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(d) = self.disk.as_mut() {
            match op(d) {
                Ok(v) => return Ok(v),
                Err(e) => self.fail(&e),
            }
        }
        op(&mut self.memory)
    }
}

impl Store for Resilient {
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
        let mut d = self.with(|s| s.add_pending(ev.clone()))?;
        d.high += std::mem::take(&mut self.lost.high);
        d.low += std::mem::take(&mut self.lost.low);
        Ok(d)
    }
    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        match &self.disk {
            Some(d) => d.pending_sizes(q),
            None => self.memory.pending_sizes(q),
        }
    }
    fn pending_bytes(&self, q: QueueName) -> usize {
        match &self.disk {
            Some(d) => d.pending_bytes(q),
            None => self.memory.pending_bytes(q),
        }
    }
    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<bool, StoreError> {
        if let Some(d) = self.disk.as_mut() {
            match d.build_message(message_id, first, high, low, build) {
                Ok(built) => return Ok(built),
                // The events stay in the file (sent after a restart): no message now.
                Err(e) => {
                    self.fail(&e);
                    return Ok(false);
                }
            }
        }
        self.memory
            .build_message(message_id, first, high, low, build)
    }
    fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        match &self.disk {
            Some(d) => d.next_message(),
            None => self.memory.next_message(),
        }
    }
    fn ack(&mut self, message_id: &str) -> Result<(), StoreError> {
        self.with(|s| s.ack(message_id))
    }
    fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.with(|s| s.reject(message_id))
    }
    fn message_count(&self) -> usize {
        match &self.disk {
            Some(d) => d.message_count(),
            None => self.memory.message_count(),
        }
    }
    fn bytes(&self) -> usize {
        match &self.disk {
            Some(d) => d.bytes(),
            None => self.memory.bytes(),
        }
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        self.with(|s| s.commit())
    }
    fn checkpoint_windows(&mut self, events: Vec<Pending>) -> Result<(), StoreError> {
        self.with(|s| s.checkpoint_windows(events.clone()))
    }
    fn pending_statistics(&self) -> usize {
        match &self.disk {
            Some(d) => d.pending_statistics(),
            None => self.memory.pending_statistics(),
        }
    }
    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
        self.memory.set_max_bytes(max_bytes)?;
        self.with(|s| s.set_max_bytes(max_bytes))
    }
    fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }
    fn stage_counters(&mut self, counters: &Counters) {
        if let Some(d) = self.disk.as_mut() {
            d.stage_counters(counters);
        }
    }
    fn take_restored_counters(&mut self) -> Option<Counters> {
        self.disk.as_mut().and_then(|d| d.take_restored_counters())
    }
}

/// A `messages` row (message_id, body, high_events, low_events) as a [`StoredMessage`].
fn stored_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        message_id: r.get(0)?,
        body: r.get(1)?,
        high_events: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        low_events: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
    })
}

/// Open the outbox in `dir`; a file that cannot be opened or fails its check is moved aside
/// (`outbox.sqlite.corrupt-<unix time>`) and a new one started.
pub fn open_or_recover(
    dir: &Path,
    max_bytes: usize,
) -> Result<(SqliteStore, Recovery), StoreError> {
    let path = dir.join("outbox.sqlite");
    match SqliteStore::open(&path, max_bytes) {
        Ok(s) => Ok((s, Recovery::Clean)),
        // Another module's file: not ours to move.
        Err(e @ StoreError::Locked(_)) => Err(e),
        Err(first) if path.exists() => {
            let stamp = chrono::Utc::now().timestamp();
            let moved_to = dir.join(format!("outbox.sqlite.corrupt-{stamp}"));
            std::fs::rename(&path, &moved_to).map_err(|e| {
                StoreError::Backend(format!("moving the corrupt outbox aside: {e}"))
            })?;
            for suffix in ["-wal", "-shm"] {
                let mut side = path.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
            let s = SqliteStore::open(&path, max_bytes)?;
            Ok((
                s,
                Recovery::MovedAside {
                    moved_to,
                    reason: first.to_string(),
                },
            ))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: QueueName, s: &str) -> Pending {
        Pending::event(q, s.to_string())
    }

    fn join(evs: &[&str]) -> String {
        evs.join(",")
    }

    #[test]
    fn survives_reopen_with_order_queues_and_message_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
            for (q, e) in [
                (QueueName::High, "h1"),
                (QueueName::Low, "l1"),
                (QueueName::High, "h2"),
                (QueueName::Low, "l2"),
                (QueueName::High, "h3"),
            ] {
                s.add_pending(p(q, e)).unwrap();
            }
            s.build_message("m-1", QueueName::High, 2, 1, &mut join)
                .unwrap();
            s.commit().unwrap();
        }
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(
            (m.message_id.as_str(), m.body.as_str()),
            ("m-1", "h1,h2,l1")
        );
        assert_eq!((m.high_events, m.low_events), (2, 1));
        assert_eq!(s.pending_sizes(QueueName::High), [2]);
        assert_eq!(s.pending_sizes(QueueName::Low), [2]);
        assert_eq!(s.bytes(), "h1,h2,l1".len() + 4);
        s.ack("m-1").unwrap();
        assert_eq!(s.next_message().unwrap(), None);
        s.build_message("m-2", QueueName::Low, 5, 5, &mut join)
            .unwrap();
        assert_eq!(s.next_message().unwrap().unwrap().body, "l2,h3");
    }

    #[test]
    fn uncommitted_events_are_lost_committed_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let crashed = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        s.add_pending(p(QueueName::High, "kept")).unwrap();
        s.commit().unwrap();
        s.add_pending(p(QueueName::High, "in-flight")).unwrap();
        // A crash before the next commit: the files as they are on disk now.
        for f in ["outbox.sqlite", "outbox.sqlite-wal"] {
            if dir.path().join(f).exists() {
                std::fs::copy(dir.path().join(f), crashed.path().join(f)).unwrap();
            }
        }
        drop(s);
        let s = SqliteStore::open(&crashed.path().join("outbox.sqlite"), 1 << 20).unwrap();
        assert_eq!(s.pending_sizes(QueueName::High), ["kept".len()]);
    }

    #[test]
    fn full_outbox_drops_oldest_low_then_high_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open_uncapped(&dir.path().join("o.sqlite"), 10).unwrap();
        s.add_pending(p(QueueName::High, "hhh")).unwrap();
        s.add_pending(p(QueueName::Low, "l1l")).unwrap();
        s.add_pending(p(QueueName::Low, "l2l")).unwrap();
        let d = s.add_pending(p(QueueName::High, "h2h")).unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        let d = s.add_pending(p(QueueName::High, "h3h")).unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        let d = s.add_pending(p(QueueName::High, "h4h")).unwrap();
        assert_eq!(d, Dropped { high: 1, low: 0 });
        assert_eq!(s.pending_sizes(QueueName::Low), Vec::<usize>::new());
        assert_eq!(s.pending_bytes(QueueName::High), 9);
        let d = s
            .add_pending(p(QueueName::Low, "this is too large"))
            .unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        s.commit().unwrap();
        drop(s);
        let s = SqliteStore::open_uncapped(&dir.path().join("o.sqlite"), 10).unwrap();
        assert_eq!(s.pending_sizes(QueueName::High), [3, 3, 3]);
    }

    #[test]
    fn the_file_shrinks_back_when_the_outbox_empties() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("o.sqlite"), 4 << 20).unwrap();
        let big = "x".repeat(1000);
        for i in 0..2000 {
            s.add_pending(p(QueueName::Low, &big)).unwrap();
            if i % 100 == 0 {
                s.commit().unwrap();
            }
        }
        s.commit().unwrap();
        s.maintain().unwrap();
        let full = s.disk_bytes();
        assert!(full > 2_000_000, "{full}");
        s.build_message("m", QueueName::Low, 0, 2000, &mut |evs| {
            format!("{} events", evs.len())
        })
        .unwrap();
        assert_eq!(s.next_message().unwrap().unwrap().body, "2000 events");
        s.ack("m").unwrap();
        let empty = s.disk_bytes();
        assert!(empty < 100_000, "the file shrank from {full} to {empty}");
    }

    /// An event as the module stores it (a ProcessCreate of a few hundred bytes, numbers
    /// varied so pages do not compress into anything special).
    fn process_create(i: usize) -> String {
        format!(
            r#"{{"EventType":"Security","Category":"Triggered","Name":"ProcessCreate","IsEmpty":false,"PayloadSchemaVersion":"1.0","Id":"{:08x}-8d1c-5b0e-9f3a-{:012x}","TimeGenerated":"2026-11-22T12:00:{:02}.000Z","Payload":[{{"Executable":"/usr/bin/curl","ProcessId":{},"ParentProcessId":{},"UserName":"root","UserId":"0","CommandLine":"curl -s https://example.invalid/{}","Time":"2026-11-22T12:00:00.000Z","ExtraDetails":{{"Hits":"1"}}}}]}}"#,
            i,
            i * 7919,
            i % 60,
            10_000 + i,
            9_000 + i % 100,
            i
        )
    }

    #[test]
    fn disk_use_stays_under_the_cap_and_uses_it() {
        // A small cap and the default one.
        for cap in [512 * 1024, 2_560_000] {
            disk_use_under(cap);
        }
    }

    fn disk_use_under(cap: usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("o.sqlite"), cap).unwrap();
        let (mut dropped, mut peak, mut added) = (0, 0, 0);
        for i in 0..cap / 80 {
            let e = process_create(i);
            added += e.len();
            let d = s.add_pending(p(QueueName::Low, &e)).unwrap();
            dropped += d.low;
            if i % 40 == 0 {
                s.commit().unwrap();
                peak = peak.max(s.disk_bytes());
                assert!(
                    s.disk_bytes() <= cap as u64,
                    "{} > {cap} after {i}",
                    s.disk_bytes()
                );
            }
        }
        s.commit().unwrap();
        eprintln!("cap {cap}: peak {peak}, JSON {}", s.bytes());
        assert!(added > 3 * cap, "the test overflows the cap");
        assert!(dropped > 0);
        // The cap is used, not just respected: the JSON held is most of it.
        assert!(
            s.bytes() > cap / 2,
            "JSON held {} of a {cap} cap",
            s.bytes()
        );
        assert!(peak > (cap as u64) * 3 / 5, "peak {peak} of {cap}");
        // A message of everything and its settlement give the disk back.
        let n = s.pending_sizes(QueueName::Low).len();
        s.build_message("m", QueueName::Low, 0, n, &mut |evs| {
            format!("{} events", evs.len())
        })
        .unwrap();
        s.ack("m").unwrap();
        assert!(s.disk_bytes() < 100_000, "{}", s.disk_bytes());
    }

    #[test]
    fn a_cap_too_small_for_the_disk_still_lets_events_through() {
        // 8192 is the schema's minimum for maxLocalCacheSizeInBytes: the empty outbox alone
        // is larger, so the events get what memory would give them.
        assert!(cap_too_small(8192) && cap_too_small(200_000));
        assert!(!cap_too_small(262_144) && !cap_too_small(2_560_000));
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("o.sqlite"), 8192).unwrap();
        assert_eq!(s.json_max(), 8192);
        let mut dropped = 0;
        for i in 0..40 {
            dropped += s
                .add_pending(p(QueueName::Low, &process_create(i)))
                .unwrap()
                .low;
            s.commit().unwrap();
        }
        // The disk is over the cap, and measuring it does not starve the events.
        assert!(s.disk_bytes() > 8192);
        assert_eq!(s.json_max(), 8192);
        let kept = s.pending_sizes(QueueName::Low).len();
        assert!(kept >= 8192 / 700, "{kept} kept");
        assert_eq!(kept as u64 + dropped, 40);
        assert!(
            s.build_message("m", QueueName::Low, 0, kept, &mut join)
                .unwrap()
        );
        assert_eq!(s.next_message().unwrap().unwrap().low_events, kept as u64);
    }

    #[test]
    fn a_window_checkpoint_left_by_a_kill_becomes_pending_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
            s.add_pending(p(QueueName::High, "before")).unwrap();
            s.checkpoint_windows(vec![p(QueueName::Low, "w1"), p(QueueName::High, "w2")])
                .unwrap();
            s.commit().unwrap();
            // A newer checkpoint replaces the older one.
            s.checkpoint_windows(vec![p(QueueName::Low, "w1'")])
                .unwrap();
            s.commit().unwrap();
        }
        let s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.restored_window_events(), 1);
        assert_eq!(s.pending_sizes(QueueName::Low), ["w1'".len()]);
        assert_eq!(s.pending_sizes(QueueName::High), ["before".len()]);
        drop(s);
        // Restored once: the checkpoint is gone.
        let s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.restored_window_events(), 0);
        assert_eq!(s.pending_sizes(QueueName::Low).len(), 1);
    }

    fn counters(dropped_low: u64) -> Counters {
        Counters {
            period: crate::delivery::PeriodStats {
                collected_low: dropped_low + 5,
                dropped_low,
                messages_sent: 2,
                ..Default::default()
            },
            upstream: crate::delivery::UpstreamDrops {
                socket_queue_lines: 7,
                ..Default::default()
            },
        }
    }

    /// Copies of the files as they are on disk now: what a SIGKILL leaves.
    fn killed_copy(dir: &Path, to: &Path) -> PathBuf {
        for f in ["outbox.sqlite", "outbox.sqlite-wal"] {
            if dir.join(f).exists() {
                std::fs::copy(dir.join(f), to.join(f)).unwrap();
            }
        }
        to.join("outbox.sqlite")
    }

    #[test]
    fn the_counters_are_committed_with_what_they_count_and_handed_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let crashed = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), None);
        s.add_pending(p(QueueName::Low, "kept")).unwrap();
        s.stage_counters(&counters(1));
        s.commit().unwrap();
        s.add_pending(p(QueueName::Low, "in-flight")).unwrap();
        s.stage_counters(&counters(2));
        let copy = killed_copy(dir.path(), crashed.path());
        s.commit().unwrap();
        // Counters alone (an event too large to store changes nothing else) commit too.
        s.stage_counters(&counters(3));
        s.commit().unwrap();
        drop(s);
        // Killed before the second commit: the counts of the first, with its event.
        let mut c = SqliteStore::open(&copy, 1 << 20).unwrap();
        assert_eq!(c.pending_sizes(QueueName::Low), ["kept".len()]);
        assert_eq!(c.take_restored_counters(), Some(counters(1)));
        assert_eq!(c.take_restored_counters(), None, "handed back once");
        drop(c);
        // Not taken out of the file at open: a kill before the next commit keeps them.
        let mut c = SqliteStore::open(&copy, 1 << 20).unwrap();
        assert_eq!(c.take_restored_counters(), Some(counters(1)));
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), Some(counters(3)));
    }

    #[test]
    fn drops_the_store_makes_itself_are_in_the_counters_it_commits_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut s = SqliteStore::open_uncapped(&path, 10).unwrap();
        s.add_pending(p(QueueName::Low, "l1l")).unwrap();
        s.add_pending(p(QueueName::Low, "l2l")).unwrap();
        s.stage_counters(&Counters::default());
        // The windows checkpoint needs the room of both: dropped, to be reported by the
        // next add, and meanwhile in the counters committed with their deletion.
        s.checkpoint_windows(vec![p(QueueName::High, "wwwwwwww")])
            .unwrap();
        s.commit().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let killed = killed_copy(dir.path(), copy.path());
        let mut k = SqliteStore::open_uncapped(&killed, 10).unwrap();
        let restored = k.take_restored_counters().unwrap();
        assert_eq!(restored.period.dropped_low, 2);
        // Reported by the next add and counted by the caller: the row says 2, not 4.
        let d = s.add_pending(p(QueueName::High, "h")).unwrap();
        assert_eq!(d, Dropped { high: 0, low: 2 });
        s.stage_counters(&restored);
        s.commit().unwrap();
        drop(s);
        let mut s = SqliteStore::open_uncapped(&path, 10).unwrap();
        assert_eq!(s.take_restored_counters().unwrap().period.dropped_low, 2);
    }

    #[test]
    fn a_counters_row_that_does_not_decode_is_left_out_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        drop(SqliteStore::open(&path, 1 << 20).unwrap());
        // Synthetic damage: a BLOB where the JSON text belongs.
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE counters SET json = x'00ff' WHERE id = 1", [])
            .unwrap();
        drop(conn);
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), None);
        s.stage_counters(&counters(4));
        s.add_pending(p(QueueName::Low, "e")).unwrap();
        s.commit().unwrap();
        drop(s);
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), Some(counters(4)));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("outbox.sqlite"),
            b"this is not a database, not at all, no",
        )
        .unwrap();
        let (s, r) = open_or_recover(dir.path(), 1000).unwrap();
        match r {
            Recovery::MovedAside { moved_to, reason } => {
                assert!(moved_to.exists());
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.message_count(), 0);
        // Held by a live outbox (another module on the same data directory): refused, and
        // the file is not taken for corrupt and moved.
        match open_or_recover(dir.path(), 1000) {
            Err(StoreError::Locked(why)) => {
                assert!(why.contains("one module per data directory"), "{why}")
            }
            other => panic!("{:?}", other.map(|x| x.1)),
        }
        let moved = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt")
            })
            .count();
        assert_eq!(moved, 1);
        drop(s);
        let (_, r) = open_or_recover(dir.path(), 1000).unwrap();
        assert_eq!(r, Recovery::Clean);
    }
}

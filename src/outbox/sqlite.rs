//! The durable outbox: the [`Store`] in SQLite (`outbox.sqlite` in the data directory), so
//! that what the module committed survives a restart, an update or a kill. A commit is on
//! disk when it returns; writes are grouped in one transaction until [`Store::commit`] or until
//! a message is built, so nothing is sent that is not committed and an event costs no fsync
//! of its own. Real disk use (file + WAL) stays under the cap. A file the module did not make
//! is read for what it is, not trusted: [`open_or_recover`] moves a corrupt or foreign one
//! aside, converts a rebuild, and deletes the rows that do not decode ([`Quarantined`]).
//! Operator-facing behaviour: README, "Nothing lost: the outbox".

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Counters, Dropped, Pending, Store, StoreError, StoredMessage, other, policy};
use crate::events::operational::QueueName;

/// Checkpoint and vacuum after this many commits, and whenever the store empties, so the file
/// shrinks back.
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

/// The share of the cap the stored JSON may take (the drop rule, `super::policy`, works on the
/// stored JSON): what is left after the empty schema, the
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
    /// The row a previous run left, until the outgoing state takes it.
    restored_counters: Option<Counters>,
    /// Rows that did not decode, removed at open.
    quarantined: Quarantined,
    /// Freed pages cannot be given back (W-OUTBOX-VACUUM said): maintenance does not retry
    /// past the first step that frees nothing.
    vacuum_stuck: bool,
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

/// The outbox file's mode: the owner's only (it holds command lines, which can hold
/// passwords). SQLite gives its WAL the file's mode.
const FILE_MODE: u32 = 0o600;

/// `path` and its side files (`-wal`, `-shm`).
fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.to_owned().into_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// Make the outbox file, or find it, the owner's only before SQLite opens it: created here
/// with [`FILE_MODE`] (SQLite would make it 0644 less the umask), tightened when it is
/// looser. A symlink is neither followed nor tightened (chmod would change its target):
/// it is not an outbox file, and the caller moves it aside.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let access = |what: &str, e: std::io::Error| {
        StoreError::Access(format!("{what} {}: {e}", path.display()))
    };
    // O_EXCL: never through a symlink, never truncating what is there.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(access("creating", e)),
    }
    for (p, main) in [
        (path.to_owned(), true),
        (side_file(path, "-wal"), false),
        (side_file(path, "-shm"), false),
    ] {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if !main && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(access("reading", e)),
        };
        if !meta.file_type().is_file() {
            return Err(StoreError::Backend(format!(
                "{} is not a regular file",
                p.display()
            )));
        }
        if meta.permissions().mode() & 0o777 & !FILE_MODE != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| access("tightening the mode of", e))?;
        }
    }
    Ok(())
}

/// A table the module writes: its name, its key column, and (column, declared type) of
/// each column the module writes.
type TableShape = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The module's tables. `statistics` is added to an older outbox's `pending` at open, so it
/// may be missing.
const COLUMNS: [TableShape; 4] = [
    (
        "pending",
        "seq",
        &[("seq", "INTEGER"), ("queue", "INTEGER"), ("json", "TEXT")],
    ),
    (
        "windows",
        "seq",
        &[("seq", "INTEGER"), ("queue", "INTEGER"), ("json", "TEXT")],
    ),
    (
        "messages",
        "seq",
        &[
            ("seq", "INTEGER"),
            ("message_id", "TEXT"),
            ("body", "TEXT"),
            ("high_events", "INTEGER"),
            ("low_events", "INTEGER"),
        ],
    ),
    ("counters", "id", &[("id", "INTEGER"), ("json", "TEXT")]),
];

/// What is wrong with the module's tables in a file, if anything (absent tables are fine:
/// they are created). Every column the module writes must be there with its type, `seq` the
/// integer key (the insertion order; `id` for the one counters row), and any other column
/// must take a default (the module does not write it). A file that fails this is not an
/// outbox of this module and is moved aside like a corrupt one; tables the module does not
/// know are left alone (they count against the cap; the operator may drop them).
fn check_schema(conn: &Connection) -> rusqlite::Result<Option<String>> {
    for (table, key_column, needed) in COLUMNS {
        let kind: Option<String> = conn
            .query_row(
                "SELECT type FROM sqlite_schema WHERE name = ?1",
                params![table],
                |r| r.get(0),
            )
            .optional()?;
        match kind.as_deref() {
            None => continue,
            Some("table") => {}
            Some(other) => return Ok(Some(format!("{table} is a {other}, not a table"))),
        }
        // (name, declared type, NOT NULL, has a default, key position)
        let mut stmt = conn.prepare(
            "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk FROM pragma_table_info(?1)",
        )?;
        let columns = stmt
            .query_map(params![table], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (name, ty) in needed {
            match columns.iter().find(|c| c.0.eq_ignore_ascii_case(name)) {
                None => return Ok(Some(format!("{table} has no column {name}"))),
                Some(c) if !c.1.eq_ignore_ascii_case(ty) => {
                    return Ok(Some(format!(
                        "{table}.{name} is declared {:?}, not {ty}",
                        c.1
                    )));
                }
                Some(_) => {}
            }
        }
        let key: Vec<&str> = columns
            .iter()
            .filter(|c| c.4 > 0)
            .map(|c| c.0.as_str())
            .collect();
        if key.len() != 1 || !key[0].eq_ignore_ascii_case(key_column) {
            return Ok(Some(format!(
                "{table}'s key is {key:?}, not {key_column} alone"
            )));
        }
        let written = |n: &str| {
            needed.iter().any(|c| c.0.eq_ignore_ascii_case(n))
                || (table == "pending" && n.eq_ignore_ascii_case("statistics"))
        };
        if let Some(c) = columns.iter().find(|c| !written(&c.0) && c.2 && !c.3) {
            return Ok(Some(format!(
                "{table}.{} is NOT NULL without a default (the module does not write it)",
                c.0
            )));
        }
    }
    Ok(None)
}

/// Bring the file to the form the module needs: incremental auto-vacuum (freed pages go
/// back) and the page size the cap's estimates are made for. A new file has them from the
/// pragmas set before its first table; a file made elsewhere gets them by `VACUUM`, which
/// rewrites it (the page size only changes outside WAL mode). Converted in place, not moved
/// aside: such a file is most likely the operator's `.recover`/`.dump` rebuild after
/// E-OUTBOX-CORRUPT, and its rows are what they wanted sent. Returns whether it was
/// converted.
fn conform(conn: &Connection) -> rusqlite::Result<bool> {
    let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // 2 = INCREMENTAL.
    if auto_vacuum == 2 && page_size == PAGE as i64 {
        return Ok(false);
    }
    let journal: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    tracing::info!(
        auto_vacuum,
        page_size,
        journal = %journal,
        "the outbox file was not made by the module: converting it (VACUUM)"
    );
    conn.execute_batch(&format!(
        "PRAGMA page_size = {PAGE};
         PRAGMA auto_vacuum = INCREMENTAL;
         VACUUM;"
    ))?;
    Ok(true)
}

/// Rows removed at open because they did not decode (see `quarantine`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quarantined {
    /// Pending events and window entries, per queue (an unknown queue counts as Low).
    pub events: Dropped,
    /// Built messages (their events are unknown: each counts as a failed message).
    pub messages: u64,
    /// What was wrong with the first one: table, seq and why.
    pub first: Option<String>,
}

impl Quarantined {
    pub fn is_empty(&self) -> bool {
        self.events == Dropped::default() && self.messages == 0
    }
}

/// A stored queue code.
fn decode_queue(v: ValueRef<'_>) -> Result<QueueName, String> {
    match v {
        ValueRef::Integer(0) => Ok(QueueName::High),
        ValueRef::Integer(1) => Ok(QueueName::Low),
        other => Err(format!("queue is {}, not 0 or 1", describe(other))),
    }
}

/// A stored statistics mark.
fn decode_statistics(v: ValueRef<'_>) -> Result<bool, String> {
    match v {
        ValueRef::Integer(n) => Ok(n != 0),
        other => Err(format!("statistics is {}, not an integer", describe(other))),
    }
}

/// A stored count of events.
fn decode_count(name: &str, v: ValueRef<'_>) -> Result<u64, String> {
    match v {
        ValueRef::Integer(n) if n >= 0 => Ok(n as u64),
        other => Err(format!("{name} is {}, not a count", describe(other))),
    }
}

fn decode_text<'a>(name: &str, v: ValueRef<'a>) -> Result<&'a str, String> {
    match v {
        ValueRef::Text(t) => {
            std::str::from_utf8(t).map_err(|e| format!("{name} is not UTF-8: {e}"))
        }
        other => Err(format!("{name} is {}, not text", describe(other))),
    }
}

fn describe(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(n) => format!("the integer {n}"),
        ValueRef::Real(x) => format!("the real {x}"),
        ValueRef::Text(t) => format!("a text of {} bytes", t.len()),
        ValueRef::Blob(b) => format!("a BLOB of {} bytes", b.len()),
    }
}

/// Text holding one JSON object and nothing else: what an event and a message are. (Events
/// are spliced into messages as they are stored: anything else would corrupt a message.
/// Whether the object is a schema-valid event is the batcher's check, when it builds.)
fn decode_object(name: &str, v: ValueRef<'_>) -> Result<(), String> {
    let json = decode_text(name, v)?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
        .map(|_| ())
        .map_err(|e| format!("{name} is not one JSON object: {e}"))
}

/// A stored message: an id, a body of one JSON object, its event counts.
fn decode_message(r: &rusqlite::Row<'_>) -> Result<(), String> {
    let get = |i: usize| r.get_ref(i).map_err(|e| e.to_string());
    let id = decode_text("message_id", get(1)?)?;
    if id.is_empty() {
        return Err("message_id is empty".to_owned());
    }
    decode_object("body", get(2)?)?;
    decode_count("high_events", get(3)?)?;
    decode_count("low_events", get(4)?)?;
    Ok(())
}

/// Delete the rows that do not decode (one transaction) and count them: every row is decoded
/// before anything is sent. Deleted rather than kept in a table: the cap is on the file, and
/// rows kept there would escape the drop rule.
fn quarantine(conn: &Connection) -> rusqlite::Result<Quarantined> {
    let mut q = Quarantined::default();
    let tx = conn.unchecked_transaction()?;
    for (table, sql) in [
        ("windows", "SELECT seq, queue, json, 0 FROM windows"),
        (
            "pending",
            "SELECT seq, queue, json, statistics FROM pending",
        ),
    ] {
        // (seq, queue if known, why)
        let mut bad: Vec<(i64, Option<QueueName>, String)> = Vec::new();
        {
            let mut stmt = tx.prepare(sql)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let queue = decode_queue(r.get_ref(1)?);
                let statistics = r.get_ref(3)?;
                let rest = decode_object("json", r.get_ref(2)?)
                    .and_then(|()| decode_statistics(statistics).map(|_| ()));
                if let Err(why) = queue.clone().and(rest) {
                    bad.push((r.get(0)?, queue.ok(), why));
                }
            }
        }
        for (seq, queue, why) in bad {
            tx.execute(&format!("DELETE FROM {table} WHERE seq = ?1"), params![seq])?;
            // The queue of a row whose queue is unreadable is unknown: Low, the one whose
            // drops cost least.
            q.events.add(queue.unwrap_or(QueueName::Low), 1);
            q.first.get_or_insert(format!("{table} row {seq}: {why}"));
        }
    }
    let mut bad: Vec<(i64, String)> = Vec::new();
    {
        let mut stmt =
            tx.prepare("SELECT seq, message_id, body, high_events, low_events FROM messages")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if let Err(why) = decode_message(r) {
                bad.push((r.get(0)?, why));
            }
        }
    }
    for (seq, why) in bad {
        tx.execute("DELETE FROM messages WHERE seq = ?1", params![seq])?;
        q.messages += 1;
        q.first.get_or_insert(format!("messages row {seq}: {why}"));
    }
    if !q.is_empty() {
        count_quarantined(&tx, &q)?;
    }
    tx.commit()?;
    Ok(q)
}

/// The removed rows go into the period's counters in the transaction that removes them, so
/// a kill right after the open neither keeps the rows nor loses their count: the delivery
/// stage takes them with the restored counters (events dropped in their queues, messages
/// failed). A counters row that does not decode is replaced (its counts were lost anyway;
/// `read_counters` would have said W-OUTBOX-COUNTERS and started from zero).
fn count_quarantined(conn: &Connection, q: &Quarantined) -> rusqlite::Result<()> {
    let mut c: Counters = conn
        .query_row("SELECT json FROM counters WHERE id = 1", [], |r| {
            Ok(match r.get_ref(0)? {
                ValueRef::Text(t) => serde_json::from_slice(t).ok(),
                _ => None,
            })
        })
        .optional()?
        .flatten()
        .unwrap_or_default();
    c.period.dropped_high = c.period.dropped_high.saturating_add(q.events.high);
    c.period.dropped_low = c.period.dropped_low.saturating_add(q.events.low);
    c.period.messages_failed = c.period.messages_failed.saturating_add(q.messages);
    let json = serde_json::to_string(&c)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT OR REPLACE INTO counters (id, json) VALUES (1, ?1)",
        params![json],
    )?;
    Ok(())
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
        owner_only(path)?;
        let conn = Connection::open(path).map_err(open_err)?;
        // The WAL's bounds first: what opening writes counts already.
        configure_wal(&conn, wal)?;
        // One process owns the outbox: a second module on the same data directory is refused,
        // not let to share the file or to move it aside as corrupt.
        // Exclusive before WAL (no -shm file); auto_vacuum before the first table exists
        // (on a file that has tables it does nothing: see `conform`).
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA auto_vacuum = INCREMENTAL;",
        )
        .map_err(open_err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(open_err)?;
        if check != "ok" {
            return Err(StoreError::Backend(format!("quick_check: {check}")));
        }
        check_schema(&conn).map_err(db)?.map_or(Ok(()), |why| {
            Err(StoreError::Backend(format!(
                "not an outbox of this module: {why}"
            )))
        })?;
        let mut vacuum_stuck = false;
        if let Err(e) = conform(&conn) {
            tracing::warn!(
                error_id = "W-OUTBOX-VACUUM",
                path = %path.display(),
                error = %e,
                "the outbox file could not be converted to give freed pages back (VACUUM needs room for a copy of it): it is used as it is and does not shrink"
            );
            vacuum_stuck = true;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        )
        .map_err(open_err)?;
        conn.execute_batch(
            // Pending events keep their queue and order (`seq`, the insertion order); messages
            // keep their id, so one sent again after a restart carries the same message-id.
            // `counters` is the statistics period's counts, one JSON row that every
            // transaction rewrites just before it commits: a count is committed with what it
            // counts.
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
             CREATE TABLE IF NOT EXISTS counters (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 json TEXT NOT NULL);
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
        let quarantined = quarantine(&conn).map_err(db)?;
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
            quarantined,
            vacuum_stuck,
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
    /// before the outgoing state took it keeps it) and hands it back once. A row that does
    /// not decode is reported (W-OUTBOX-COUNTERS) and replaced by the next commit.
    fn read_counters(&mut self) -> Result<(), StoreError> {
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

    /// The rows removed at open because they did not decode.
    pub fn quarantined(&self) -> &Quarantined {
        &self.quarantined
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

    /// The budget a memory fallback gets: the whole cap (memory has no pages or WAL), or the
    /// JSON budget when there is no cap.
    pub(super) fn memory_budget(&self) -> usize {
        self.cap.unwrap_or(self.json_max)
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
        let mut before: Option<i64> = None;
        loop {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .map_err(db)?;
            if free == 0 {
                break;
            }
            // A step that freed nothing (auto_vacuum off: a file `conform` could not
            // convert) would free nothing the next time either: stop, never spin.
            if before.is_some_and(|b| free >= b) {
                if !self.vacuum_stuck {
                    self.vacuum_stuck = true;
                    tracing::warn!(
                        error_id = "W-OUTBOX-VACUUM",
                        path = %self.path.display(),
                        free_pages = free,
                        "freed pages of the outbox cannot be given back: the file keeps its size (its pages are reused)"
                    );
                }
                break;
            }
            before = Some(free);
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

    /// One UPDATE of the open transaction (`RETURNING` the rows it moved, so the mirrors
    /// follow exactly what changed); the mirrors change only when it succeeded.
    fn requeue(&mut self, name: &str, to: QueueName) -> Result<u64, StoreError> {
        let from = other(to);
        if self.mirror(from).is_empty() {
            return Ok(0);
        }
        self.begin()?;
        // Quirk: json_extract fails the whole statement on text that is not JSON; such a row
        // is quarantined at open, but `json_valid` keeps one that got in anyway from
        // blocking every other row's move.
        let mut moved: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare(
                    "UPDATE pending SET queue = ?1 WHERE queue = ?2 AND json_valid(json) \
                     AND json_extract(json, '$.Name') = ?3 RETURNING seq",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![queue_code(to), queue_code(from), name], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        if moved.is_empty() {
            return Ok(0);
        }
        moved.sort_unstable();
        let (mut high, mut low) = (
            std::mem::take(&mut self.high),
            std::mem::take(&mut self.low),
        );
        let (source, target) = match to {
            QueueName::High => (&mut low, &mut high),
            QueueName::Low => (&mut high, &mut low),
        };
        let (going, staying): (VecDeque<_>, VecDeque<_>) = source
            .drain(..)
            .partition(|e| moved.binary_search(&e.0).is_ok());
        *source = staying;
        let mut all: Vec<(i64, usize, bool)> = target.drain(..).chain(going).collect();
        all.sort_unstable_by_key(|e| e.0);
        *target = all.into();
        (self.high, self.low) = (high, low);
        Ok(moved.len() as u64)
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
        // Another module's file, or one out of reach: not ours to move.
        Err(e @ (StoreError::Locked(_) | StoreError::Access(_))) => Err(e),
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

    /// A stand-in event: the store needs one JSON object, not a schema-valid event
    /// (synthetic: these tests are about order, sizes and ids).
    fn obj(s: &str) -> String {
        format!(r#"{{"e":"{s}"}}"#)
    }

    /// An event `obj(s)` of queue `q`.
    fn po(q: QueueName, s: &str) -> Pending {
        Pending::event(q, obj(s))
    }

    /// A stand-in message of `evs` (one JSON object, as the store needs).
    fn join(evs: &[&str]) -> String {
        format!(r#"{{"Events":[{}]}}"#, evs.join(","))
    }

    fn objs(evs: &[&str]) -> String {
        let evs: Vec<String> = evs.iter().map(|e| obj(e)).collect();
        let evs: Vec<&str> = evs.iter().map(String::as_str).collect();
        join(&evs)
    }

    #[test]
    fn a_memory_fallback_gets_the_whole_cap_or_the_json_budget() {
        let dir = tempfile::tempdir().unwrap();
        let capped = SqliteStore::open(&dir.path().join("capped.sqlite"), 1 << 20).unwrap();
        assert_eq!(capped.memory_budget(), 1 << 20);
        assert!(capped.json_max() < 1 << 20);
        let uncapped = SqliteStore::open_uncapped(&dir.path().join("o.sqlite"), 5000).unwrap();
        assert_eq!(uncapped.memory_budget(), 5000);
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
                s.add_pending(po(q, e)).unwrap();
            }
            s.build_message("m-1", QueueName::High, 2, 1, &mut join)
                .unwrap();
            s.commit().unwrap();
        }
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(
            (m.message_id.as_str(), m.body.as_str()),
            ("m-1", objs(&["h1", "h2", "l1"]).as_str())
        );
        assert_eq!((m.high_events, m.low_events), (2, 1));
        assert_eq!(s.pending_sizes(QueueName::High), [obj("h3").len()]);
        assert_eq!(s.pending_sizes(QueueName::Low), [obj("l2").len()]);
        assert_eq!(s.bytes(), m.body.len() + 2 * obj("h3").len());
        s.ack("m-1").unwrap();
        assert_eq!(s.next_message().unwrap(), None);
        s.build_message("m-2", QueueName::Low, 5, 5, &mut join)
            .unwrap();
        assert_eq!(s.next_message().unwrap().unwrap().body, objs(&["l2", "h3"]));
    }

    #[test]
    fn uncommitted_events_are_lost_committed_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let crashed = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        s.add_pending(po(QueueName::High, "kept")).unwrap();
        s.commit().unwrap();
        s.add_pending(po(QueueName::High, "in-flight")).unwrap();
        // A crash before the next commit: the files as they are on disk now.
        for f in ["outbox.sqlite", "outbox.sqlite-wal"] {
            if dir.path().join(f).exists() {
                std::fs::copy(dir.path().join(f), crashed.path().join(f)).unwrap();
            }
        }
        drop(s);
        let s = SqliteStore::open(&crashed.path().join("outbox.sqlite"), 1 << 20).unwrap();
        assert_eq!(s.pending_sizes(QueueName::High), [obj("kept").len()]);
    }

    #[test]
    fn full_outbox_drops_oldest_low_then_high_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // Events of 11 bytes, room for three.
        let max = 3 * obj("hhh").len() + 4;
        let mut s = SqliteStore::open_uncapped(&dir.path().join("o.sqlite"), max).unwrap();
        s.add_pending(po(QueueName::High, "hhh")).unwrap();
        s.add_pending(po(QueueName::Low, "l1l")).unwrap();
        s.add_pending(po(QueueName::Low, "l2l")).unwrap();
        let d = s.add_pending(po(QueueName::High, "h2h")).unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        let d = s.add_pending(po(QueueName::High, "h3h")).unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        let d = s.add_pending(po(QueueName::High, "h4h")).unwrap();
        assert_eq!(d, Dropped { high: 1, low: 0 });
        assert_eq!(s.pending_sizes(QueueName::Low), Vec::<usize>::new());
        assert_eq!(s.pending_bytes(QueueName::High), 33);
        let d = s
            .add_pending(po(QueueName::Low, &"this is too large".repeat(3)))
            .unwrap();
        assert_eq!(d, Dropped { high: 0, low: 1 });
        s.commit().unwrap();
        drop(s);
        let s = SqliteStore::open_uncapped(&dir.path().join("o.sqlite"), max).unwrap();
        assert_eq!(s.pending_sizes(QueueName::High), [11, 11, 11]);
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
            s.add_pending(po(QueueName::High, "before")).unwrap();
            s.checkpoint_windows(vec![po(QueueName::Low, "w1"), po(QueueName::High, "w2")])
                .unwrap();
            s.commit().unwrap();
            // A newer checkpoint replaces the older one.
            s.checkpoint_windows(vec![po(QueueName::Low, "w1'")])
                .unwrap();
            s.commit().unwrap();
        }
        let s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.restored_window_events(), 1);
        assert_eq!(s.pending_sizes(QueueName::Low), [obj("w1'").len()]);
        assert_eq!(s.pending_sizes(QueueName::High), [obj("before").len()]);
        drop(s);
        // Restored once: the checkpoint is gone.
        let s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.restored_window_events(), 0);
        assert_eq!(s.pending_sizes(QueueName::Low).len(), 1);
    }

    fn counters(dropped_low: u64) -> Counters {
        Counters {
            period: crate::outgoing::PeriodStats {
                collected_low: dropped_low + 5,
                dropped_low,
                messages_sent: 2,
                ..Default::default()
            },
            upstream: crate::outgoing::UpstreamDrops {
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

    /// A stand-in event with a `Name` (synthetic: `requeue` reads nothing else).
    fn named(name: &str, tag: &str) -> String {
        format!(r#"{{"Name":"{name}","e":"{tag}"}}"#)
    }

    /// A priority change moves a type's pending events (statistics ones with their mark)
    /// into the other queue at their age; committed, the move survives a kill; not
    /// committed, a kill leaves them where they were; bytes do not change.
    #[test]
    fn requeue_moves_a_type_to_the_other_queue_at_its_age_and_commits_with_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        let evs = [
            (QueueName::Low, named("ProcessCreate", "p1"), false),
            (QueueName::Low, named("Login", "l1"), false),
            (QueueName::High, named("ListeningPorts", "h1"), false),
            (QueueName::Low, named("ProcessCreate", "p2"), false),
            (QueueName::Low, named("MessageStatistics", "s1"), true),
        ];
        for (queue, json, statistics) in &evs {
            let ev = Pending {
                queue: *queue,
                json: json.clone(),
                statistics: *statistics,
            };
            s.add_pending(ev).unwrap();
        }
        let bytes = s.bytes();
        assert_eq!(s.requeue("ProcessCreate", QueueName::High).unwrap(), 2);
        assert_eq!(s.requeue("MessageStatistics", QueueName::High).unwrap(), 1);
        assert_eq!(s.requeue("ProcessCreate", QueueName::High).unwrap(), 0);
        assert_eq!(s.requeue("Nothing", QueueName::Low).unwrap(), 0);
        let len = |i: usize| evs[i].1.len();
        assert_eq!(
            s.pending_sizes(QueueName::High),
            [len(0), len(2), len(3), len(4)]
        );
        assert_eq!(s.pending_sizes(QueueName::Low), [len(1)]);
        assert_eq!(s.bytes(), bytes);
        assert_eq!(s.pending_statistics(), 1);
        s.commit().unwrap();
        // Not committed: the kill comes first.
        assert_eq!(s.requeue("Login", QueueName::High).unwrap(), 1);
        let killed = tempfile::tempdir().unwrap();
        let copy = killed_copy(dir.path(), killed.path());
        drop(s);
        let mut s = SqliteStore::open(&copy, 1 << 20).unwrap();
        assert_eq!(s.pending_sizes(QueueName::Low), [len(1)]);
        assert_eq!(s.pending_statistics(), 1);
        s.build_message("m", QueueName::High, 9, 0, &mut join)
            .unwrap();
        let m = s.next_message().unwrap().unwrap();
        let order: Vec<&str> = [0, 2, 3, 4].iter().map(|&i| evs[i].1.as_str()).collect();
        assert_eq!(m.body, join(&order));
        assert_eq!((m.high_events, m.low_events), (4, 0));
    }

    #[test]
    fn the_counters_are_committed_with_what_they_count_and_handed_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let crashed = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), None);
        s.add_pending(po(QueueName::Low, "kept")).unwrap();
        s.stage_counters(&counters(1));
        s.commit().unwrap();
        s.add_pending(po(QueueName::Low, "in-flight")).unwrap();
        s.stage_counters(&counters(2));
        let copy = killed_copy(dir.path(), crashed.path());
        s.commit().unwrap();
        // Counters alone (an event too large to store changes nothing else) commit too.
        s.stage_counters(&counters(3));
        s.commit().unwrap();
        drop(s);
        // Killed before the second commit: the counts of the first, with its event.
        let mut c = SqliteStore::open(&copy, 1 << 20).unwrap();
        assert_eq!(c.pending_sizes(QueueName::Low), [obj("kept").len()]);
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
        conn.execute(
            "INSERT OR REPLACE INTO counters (id, json) VALUES (1, x'00ff')",
            [],
        )
        .unwrap();
        drop(conn);
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!(s.take_restored_counters(), None);
        s.stage_counters(&counters(4));
        s.add_pending(po(QueueName::Low, "e")).unwrap();
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

    /// Run `f` on a thread and wait at most `secs` for it: a regression that spins fails the
    /// test instead of hanging the suite (the spinning thread ends with the test process).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("no answer within {secs} s ({e}): it spins or hangs"))
    }

    /// (auto_vacuum, page_size, journal_mode, freelist_count) of a file, read by a
    /// connection of its own.
    fn file_form(path: &Path) -> (i64, i64, String, i64) {
        let c = Connection::open(path).unwrap();
        let get = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
        let journal: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        (
            get("auto_vacuum").unwrap(),
            get("page_size").unwrap(),
            journal,
            get("freelist_count").unwrap(),
        )
    }

    #[test]
    fn a_file_made_by_another_tool_is_converted_and_maintenance_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        // As an operator's `.recover` rebuild makes it (synthetic, see the file).
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(include_str!("../../tests/support/recovered_outbox.sql"))
                .unwrap();
            for (q, e) in [(1, "l1"), (0, "h1"), (1, "l2")] {
                c.execute(
                    "INSERT INTO pending (queue, json) VALUES (?1, ?2)",
                    params![q, obj(e)],
                )
                .unwrap();
            }
        }
        assert_eq!(file_form(&path).0, 0);
        assert!(
            file_form(&path).3 > 100,
            "free pages: {:?}",
            file_form(&path)
        );
        let p2 = path.clone();
        let (high, low, body) = within(60, move || {
            let mut s = SqliteStore::open(&p2, 1 << 20).unwrap();
            s.add_pending(po(QueueName::High, "h2")).unwrap();
            let sizes = (
                s.pending_sizes(QueueName::High),
                s.pending_sizes(QueueName::Low),
            );
            s.build_message("m", QueueName::High, 5, 5, &mut join)
                .unwrap();
            let body = s.next_message().unwrap().unwrap().body;
            s.ack("m").unwrap();
            s.maintain().unwrap();
            (sizes.0, sizes.1, body)
        });
        assert_eq!(high, [obj("h1").len(), obj("h2").len()]);
        assert_eq!(low, [obj("l1").len(), obj("l2").len()]);
        assert_eq!(body, objs(&["h1", "h2", "l1", "l2"]));
        // The file is now what the module makes: incremental auto-vacuum, 4 KB pages, WAL,
        // its free pages given back; the operator's extra table is left alone.
        assert_eq!(file_form(&path), (2, PAGE as i64, "wal".to_owned(), 0));
        let c = Connection::open(&path).unwrap();
        let kept: i64 = c
            .query_row("SELECT count(*) FROM lost_and_found", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 10);
    }

    #[test]
    fn maintenance_stops_when_a_step_frees_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let p2 = path.clone();
        let free = within(60, move || {
            let mut s = SqliteStore::open(&p2, 4 << 20).unwrap();
            // What a file `conform` could not convert is like (synthetic: turned off here).
            s.conn
                .execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
                .unwrap();
            for i in 0..200 {
                s.add_pending(po(QueueName::Low, &format!("{i:0>900}")))
                    .unwrap();
            }
            s.commit().unwrap();
            s.build_message("m", QueueName::Low, 0, 200, &mut |evs| {
                format!(r#"{{"n":{}}}"#, evs.len())
            })
            .unwrap();
            // Emptied: the commit maintains; so does this.
            s.ack("m").unwrap();
            s.maintain().unwrap();
            s.conn
                .query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
                .unwrap()
        });
        assert!(
            free > 10,
            "the pages stay free, and maintain returned: {free}"
        );
    }

    /// The mode bits of a file.
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_outbox_and_its_wal_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        // New: created 0600 (SQLite alone makes it 0644 less the umask), its WAL too.
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        s.add_pending(po(QueueName::Low, "secret")).unwrap();
        s.commit().unwrap();
        let wal = side_file(&path, "-wal");
        assert!(wal.exists());
        assert_eq!((mode(&path), mode(&wal)), (0o600, 0o600));
        drop(s);
        // An outbox made looser (an older version, an operator's copy): tightened at open,
        // with a WAL left looser by a kill.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
        let s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert_eq!((mode(&path), mode(&wal)), (0o600, 0o600));
        assert_eq!(s.pending_sizes(QueueName::Low), [obj("secret").len()]);
        drop(s);
        // A corrupt file, 0644, is moved aside 0600.
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(&wal);
        std::fs::write(&path, b"this is not a database, not at all, no").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (s, r) = open_or_recover(dir.path(), 1 << 20).unwrap();
        let Recovery::MovedAside { moved_to, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!((mode(&moved_to), mode(&path)), (0o600, 0o600));
        drop(s);
        // A symlink is not followed: its target keeps its mode, the link is moved aside.
        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"someone else's file").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (_s, r) = open_or_recover(dir.path(), 1 << 20).unwrap();
        let Recovery::MovedAside { moved_to, reason } = r else {
            panic!("{r:?}")
        };
        assert!(reason.contains("not a regular file"), "{reason}");
        assert!(std::fs::symlink_metadata(&moved_to).unwrap().is_symlink());
        assert_eq!(mode(&target), 0o644);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"someone else's file".to_vec()
        );
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn rows_that_do_not_decode_are_removed_and_counted_and_the_rest_flows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        {
            let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
            for (q, e) in [(QueueName::High, "h1"), (QueueName::Low, "l1")] {
                s.add_pending(po(q, e)).unwrap();
            }
            s.build_message("good-1", QueueName::High, 1, 0, &mut join)
                .unwrap();
            s.add_pending(po(QueueName::Low, "l2")).unwrap();
            s.commit().unwrap();
        }
        // Synthetic damage, as another tool (or a bad disk that kept the pages sane) leaves it.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                r#"INSERT INTO pending (queue, json) VALUES (0, CAST('{"e":"blob"}' AS BLOB));
                   INSERT INTO pending (queue, json) VALUES (1, 'rm -rf / not json');
                   INSERT INTO pending (queue, json) VALUES (1, '[1, 2]');
                   INSERT INTO pending (queue, json) VALUES (1, '{"a":1} {"b":2}');
                   INSERT INTO pending (queue, json) VALUES (7, '{"e":"queue 7"}');
                   INSERT INTO pending (queue, json) VALUES ('x', '{"e":"queue x"}');
                   INSERT INTO pending (queue, json, statistics) VALUES (0, '{"e":"s"}', 'yes');
                   INSERT INTO windows (queue, json) VALUES (0, 'not json');
                   INSERT INTO windows (queue, json) VALUES (1, '{"e":"w1"}');
                   INSERT INTO messages (message_id, body, high_events, low_events)
                       VALUES ('bad-blob', CAST('{"Events":[]}' AS BLOB), 1, 0);
                   INSERT INTO messages (message_id, body, high_events, low_events)
                       VALUES ('bad-count', '{"Events":[]}', -1, 0);
                   INSERT INTO messages (message_id, body, high_events, low_events)
                       VALUES (x'ff', '{"Events":[]}', 1, 0);
                   INSERT INTO messages (message_id, body, high_events, low_events)
                       VALUES ('good-2', '{"Events":[2]}', 0, 1);"#,
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        let q = s.quarantined().clone();
        assert_eq!(
            (q.events, q.messages),
            (Dropped { high: 3, low: 5 }, 3),
            "{q:?}"
        );
        assert!(
            q.first.as_deref().unwrap_or("").contains("windows row"),
            "{q:?}"
        );
        // Their count was committed with their removal: it is in the counters handed to
        // the outgoing state, which reports it in the first statistics.
        let dropped_and_failed = |c: Option<Counters>| {
            c.map(|c| {
                (
                    c.period.dropped_high,
                    c.period.dropped_low,
                    c.period.messages_failed,
                )
            })
        };
        assert_eq!(
            dropped_and_failed(s.take_restored_counters()),
            Some((3, 5, 3))
        );
        // The rest flows: the good messages in order, the good pending events and the good
        // window entry (now pending) after them.
        assert_eq!(s.message_count(), 2);
        let m = s.next_message().unwrap().unwrap();
        assert_eq!((m.message_id.as_str(), m.body), ("good-1", objs(&["h1"])));
        s.ack("good-1").unwrap();
        assert_eq!(s.next_message().unwrap().unwrap().message_id, "good-2");
        s.ack("good-2").unwrap();
        assert!(
            s.build_message("m", QueueName::Low, 5, 5, &mut join)
                .unwrap()
        );
        assert_eq!(
            s.next_message().unwrap().unwrap().body,
            objs(&["l1", "l2", "w1"])
        );
        drop(s);
        // Removed once: a second open finds nothing, and a run killed before its statistics
        // committed new counters hands the same counts on (not lost, not doubled).
        let mut s = SqliteStore::open(&path, 1 << 20).unwrap();
        assert!(s.quarantined().is_empty());
        assert_eq!(
            dropped_and_failed(s.take_restored_counters()),
            Some((3, 5, 3))
        );
    }

    #[test]
    fn decoding_a_stored_value() {
        use ValueRef::{Blob, Integer, Null, Real, Text};
        assert_eq!(decode_queue(Integer(0)), Ok(QueueName::High));
        assert_eq!(decode_queue(Integer(1)), Ok(QueueName::Low));
        for bad in [
            Integer(2),
            Integer(-1),
            Null,
            Text(b"0"),
            Real(0.0),
            Blob(b"\0"),
        ] {
            assert!(decode_queue(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_statistics(Integer(0)), Ok(false));
        assert_eq!(decode_statistics(Integer(1)), Ok(true));
        assert!(decode_statistics(Null).is_err());
        assert_eq!(decode_count("n", Integer(3)), Ok(3));
        assert_eq!(
            decode_count("n", Integer(-1)),
            Err("n is the integer -1, not a count".to_owned())
        );
        assert_eq!(decode_object("json", Text(br#" {"a":[1]} "#)), Ok(()));
        for (bad, why) in [
            (Blob(br#"{"a":1}"#), "json is a BLOB of 7 bytes, not text"),
            (Null, "json is NULL, not text"),
            (Integer(1), "json is the integer 1, not text"),
            (Text(b"\xff{}"), "json is not UTF-8"),
            (Text(b"not json"), "json is not one JSON object"),
            (Text(b"[1]"), "json is not one JSON object"),
            (Text(b"\"s\""), "json is not one JSON object"),
            (Text(br#"{"a":1},{"b":2}"#), "json is not one JSON object"),
            (Text(b""), "json is not one JSON object"),
        ] {
            let got = decode_object("json", bad).unwrap_err();
            assert!(got.starts_with(why), "{bad:?}: {got}");
        }
    }
}

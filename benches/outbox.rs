//! What the durable outbox costs per event: the real events of `tests/data/activity.log`
//! (258 ProcessCreate and ConnectionCreate events, without aggregation, 145 KB of JSON) go
//! into the store the way the outgoing state puts them there, committed per tick.
//!
//! - `tick`: 100 events added and one commit (on disk: one fsync, `synchronous=FULL`), the
//!   SQLite outbox in a temporary directory beside the in-memory store.
//! - `overflow`: the same into an outbox already at its cap, so each event first drops the
//!   oldest (the steady state of a long edgeHub outage under load).
//! - `message`: a message built from the pending events (up to 256 KB) and acknowledged.
//!
//! `cargo bench --bench outbox`. The temporary directory is on the machine's /tmp: the
//! fsync cost is that disk's.

use azureiotsecurity::app::{self, Mode};
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::events::operational::QueueName;
use azureiotsecurity::outbox::sqlite::SqliteStore;
use azureiotsecurity::outbox::{MemoryStore, Pending, Store};
use divan::Bencher;
use divan::counter::ItemsCount;

fn main() {
    divan::main();
}

/// The capture's events as the store receives them (one JSON object each).
fn events() -> Vec<String> {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/activity.log"
    ))
    .expect("tests/data/activity.log");
    // Events mode prints every derived event: no aggregation.
    let mut out = Vec::new();
    app::replay(&Settings::default(), &text[..], &mut out, Mode::Events).expect("replay");
    String::from_utf8(out)
        .expect("JSON is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

const TICK: usize = 100;

fn fill(store: &mut dyn Store, events: &[String], n: usize) {
    for e in events.iter().cycle().take(n) {
        store
            .add_pending(Pending::event(QueueName::Low, e.clone()))
            .expect("add");
    }
}

#[divan::bench(args = ["memory", "sqlite"])]
fn tick(bencher: Bencher, store: &str) {
    let events = events();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s: Box<dyn Store> = match store {
        "memory" => Box::new(MemoryStore::new(usize::MAX)),
        _ => Box::new(SqliteStore::open(&dir.path().join("o.sqlite"), usize::MAX).expect("open")),
    };
    bencher.counter(ItemsCount::new(TICK)).bench_local(|| {
        fill(s.as_mut(), &events, TICK);
        s.commit().expect("commit");
    });
}

#[divan::bench]
fn overflow(bencher: Bencher) {
    let events = events();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SqliteStore::open(&dir.path().join("o.sqlite"), 2_560_000).expect("open");
    fill(&mut s, &events, 20_000);
    s.commit().expect("commit");
    bencher.counter(ItemsCount::new(TICK)).bench_local(|| {
        fill(&mut s, &events, TICK);
        s.commit().expect("commit");
    });
}

#[divan::bench]
fn message(bencher: Bencher) {
    let events = events();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SqliteStore::open(&dir.path().join("o.sqlite"), usize::MAX).expect("open");
    // 256 KB of events per message: about 460 of them.
    let per_message = 262_144 * events.len() / events.iter().map(String::len).sum::<usize>();
    let mut n = 0u64;
    bencher
        .counter(ItemsCount::new(per_message))
        .with_inputs(|| ())
        .bench_local_values(|()| {
            fill(&mut s, &events, per_message);
            s.commit().expect("commit");
            n += 1;
            let id = format!("m{n}");
            s.build_message(&id, QueueName::Low, 0, per_message, &mut |evs| {
                evs.join(",")
            })
            .expect("build");
            s.ack(&id).expect("ack");
        });
}

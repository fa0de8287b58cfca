//! Upstream cost of the real captures: audit records in, security events out, and the
//! messages, bytes and 4 KB chunks (what IoT Hub bills) the module sends for them, against
//! the baseline of one message per event without aggregation.
//!
//! `cargo bench --bench cost` prints a Markdown table (the README's). It counts, it does not
//! time: every figure is the same on every run.

use std::io::Read;

use azureiotsecurity::app::{self, Mode};
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::outgoing::batch::{CHUNK, Envelope};
use uuid::Uuid;

struct Cost {
    records: usize,
    events: usize,
    messages: usize,
    bytes: usize,
    chunks: usize,
}

fn cost(text: &[u8], settings: &Settings, mode: Mode) -> Cost {
    let mut out = Vec::new();
    let events_mode = matches!(mode, Mode::Events);
    let stats = app::replay(settings, text, &mut out, mode).expect("replay");
    let lines: Vec<&[u8]> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let (messages, bytes, chunks) = match events_mode {
        false => (
            lines.len(),
            lines.iter().map(|l| l.len()).sum(),
            lines.iter().map(|l| l.len().div_ceil(CHUNK)).sum(),
        ),
        true => {
            // One message per event: the envelope around each.
            let env = Envelope::new(Uuid::nil(), env!("CARGO_PKG_VERSION"));
            let sizes: Vec<usize> = lines.iter().map(|l| l.len() + env.overhead()).collect();
            (
                sizes.len(),
                sizes.iter().sum(),
                sizes.iter().map(|s| s.div_ceil(CHUNK)).sum(),
            )
        }
    };
    Cost {
        records: stats.coalesce.records as usize,
        events: stats.derive.events as usize,
        messages,
        bytes,
        chunks,
    }
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut load = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(format!("{root}/tests/data/load.log.gz")).expect("load capture"),
    )
    .read_to_end(&mut load)
    .expect("gunzip");
    // `cargo test --all-targets` runs this too, without `--bench`, in a debug build: a
    // slice of the load keeps that quick.
    if !std::env::args().any(|a| a == "--bench") {
        let cut = load
            .split(|&b| b == b'\n')
            .take(20_000)
            .collect::<Vec<_>>()
            .join(&b'\n');
        load = cut;
    }
    let activity =
        std::fs::read(format!("{root}/tests/data/activity.log")).expect("activity capture");
    let agent = Mode::Messages {
        agent_id: Uuid::from_u128(1),
    };
    let defaults = Settings::default();
    let mut no_agg = Settings::default();
    for k in [
        "aggregationEnabledProcessCreate",
        "aggregationEnabledConnectionCreate",
    ] {
        no_agg
            .agent
            .insert(k.into(), serde_json::Value::Bool(false));
    }
    println!("| input | records in | events out | mode | messages | bytes | 4 KB chunks |");
    println!("|---|---:|---:|---|---:|---:|---:|");
    for (name, text) in [
        ("activity.log (150 s of device life)", &activity[..]),
        ("load.log.gz (23k execs in 15 s)", &load[..]),
    ] {
        let rows = [
            (
                "one message per event (baseline)",
                cost(text, &defaults, Mode::Events),
            ),
            (
                "batched, no aggregation",
                cost(text, &no_agg, agent.clone()),
            ),
            (
                "batched + aggregated (defaults)",
                cost(text, &defaults, agent.clone()),
            ),
        ];
        for (mode, c) in rows {
            println!(
                "| {name} | {} | {} | {mode} | {} | {} | {} |",
                c.records, c.events, c.messages, c.bytes, c.chunks
            );
        }
    }
}

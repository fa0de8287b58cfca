//! The twin's apply step (`config::twin::DesiredState`) on arbitrary sequences of desired
//! documents and patches. The input is lines: the first byte of the input picks the local
//! layers (bit 0: try-out, bit 1: `debug.short_agent_intervals`), then each line is one
//! step, `<op><version> <JSON>`: `D` a GET's desired document, `P` a patch (no digits: a
//! patch without `$version`), `R` a kept configuration to restore, `L` a settings-file layer
//! (`[agent]` as JSON, before the first step only). Checks, after every step: no panic; a
//! refused, stale or out-of-order update changes nothing; the version taken only moves
//! forward by one on a patch; the configuration in force passes the checks between settings
//! (high ≤ low, cache ≥ message size, sizes and minimums in range) and parses back whole;
//! the kept configuration restored on a fresh state gives the configuration in force; the
//! reported properties pass edgeHub's validator.

#![no_main]

use std::time::Duration;

use azureiotsecurity::config::agent::{
    self, AgentConfig, Layer, MAX_HUB_RESOURCE_ID, MAX_MESSAGE_SIZE, MIN_AGGREGATION_INTERVAL,
    MIN_MESSAGE_FREQUENCY, MIN_MESSAGE_SIZE, MIN_SNAPSHOT_FREQUENCY, Source,
};
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::config::twin::{DesiredState, KeptDesired, Step};
use azureiotsecurity::edge::amqp::twin::reported_error;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The configuration in force must pass the checks between settings.
fn check(c: &AgentConfig, tryout: bool, minimums: bool) {
    assert!(
        c.high_priority_message_frequency <= c.low_priority_message_frequency,
        "{c:?}"
    );
    assert!(c.max_local_cache_size_in_bytes >= c.max_message_size_in_bytes, "{c:?}");
    assert!(
        (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&c.max_message_size_in_bytes),
        "{c:?}"
    );
    assert!(c
        .hub_resource_id
        .as_ref()
        .is_none_or(|id| !id.is_empty() && id.len() <= MAX_HUB_RESOURCE_ID));
    if minimums {
        assert!(c.high_priority_message_frequency >= MIN_MESSAGE_FREQUENCY, "{c:?}");
        assert!(c.low_priority_message_frequency >= MIN_MESSAGE_FREQUENCY, "{c:?}");
        for a in &c.aggregations {
            assert!(a.interval >= MIN_AGGREGATION_INTERVAL, "{c:?}");
        }
        // Try-out's 30 s statistics are under the minimum on purpose.
        if !tryout {
            assert!(c.snapshot_frequency >= MIN_SNAPSHOT_FREQUENCY, "{c:?}");
        }
    }
    if tryout {
        assert_eq!(c.high_priority_message_frequency, Duration::from_secs(10));
        assert_eq!(c.snapshot_frequency, Duration::from_secs(30));
    }
    // The twin form parses back whole, without a type error.
    let parsed = Layer::parse(Source::Twin, &c.to_twin_json(), c);
    assert_eq!(parsed.errors, vec![]);
    assert_eq!(parsed.ignored, Vec::<String>::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (tryout, short) = (flags & 1 != 0, flags & 2 != 0);
    let mut settings = Settings::default();
    settings.module.tryout = tryout;
    settings.debug.short_agent_intervals = short;
    let mut local = settings.agent_layers();
    let mut started = false;
    let mut steps = 0;
    let mut state = DesiredState::with_layers(local.clone());
    for line in rest.split(|&b| b == b'\n') {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let digits = rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'-')
            .count();
        let version = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        let Ok(json) = serde_json::from_slice::<Value>(&rest[digits..]) else {
            continue;
        };
        if op == b'L' {
            if !started {
                let parsed = Layer::parse(Source::File, &json, &AgentConfig::default());
                if parsed.errors.is_empty() {
                    local.layers.push(parsed.layer);
                    state = DesiredState::with_layers(local.clone());
                }
            }
            continue;
        }
        started = true;
        steps += 1;
        if steps > 64 {
            break;
        }
        let before = state.clone();
        let step = match op {
            b'D' => {
                let mut doc = json;
                if let (Some(v), Value::Object(m)) = (version, &mut doc) {
                    m.insert("$version".to_string(), Value::from(v));
                }
                state.on_document(&doc)
            }
            b'P' => state.on_patch(version, &json),
            b'R' => state.restore(KeptDesired {
                version: version.unwrap_or(0),
                desired: json,
            }),
            _ => continue,
        };
        match &step {
            Step::Rejected { errors } => {
                assert!(!errors.is_empty());
                assert_eq!(state.config(), before.config());
                assert_eq!(state.kept(), before.kept());
            }
            Step::Stale { .. } | Step::Gap { .. } => {
                assert_eq!(state.config(), before.config());
                assert_eq!(state.kept(), before.kept());
                assert_eq!(state.version(), before.version());
            }
            Step::Unchanged => assert_eq!(state.config(), before.config()),
            Step::Applied { config, .. } => assert_eq!(config, state.config()),
        }
        if op == b'P' && !matches!(step, Step::Stale { .. } | Step::Gap { .. }) {
            assert_eq!(
                state.version(),
                before.version().map(|v| v + 1),
                "{step:?}"
            );
        }
        check(state.config(), tryout, !short);
        // A restart from the kept configuration starts with the configuration in force.
        if let Some(k) = state.kept() {
            assert!(serde_json::to_vec(&k).is_ok());
            let mut fresh = DesiredState::with_layers(local.clone());
            let _ = fresh.restore(k);
            assert_eq!(fresh.config(), state.config());
        }
        let reported = state.reported(uuid::Uuid::from_u128(u128::from(flags)), "0.1.0");
        assert_eq!(reported_error(&reported), None, "{reported}");
        assert_eq!(
            reported[agent::OBJECT_NAME],
            {
                let mut c = state.config().to_twin_json();
                // The cache is capped at 2^52 - 1 in the reported form.
                if let Some(v) = c.get_mut("maxLocalCacheSizeInBytes") {
                    if v["value"].as_u64().is_some_and(|n| n > (1 << 52) - 1) {
                        v["value"] = Value::from((1u64 << 52) - 1);
                    }
                }
                c
            }
        );
    }
});

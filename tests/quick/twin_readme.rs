//! The README's "Module twin" section stays in step with the code: its example desired patch
//! applies cleanly, and its example reported properties are exactly what the module reports
//! after it (`DesiredState::reported`), within edgeHub's reported-property limits.

use azureiotsecurity::config::agent::{AgentConfig, OBJECT_NAME};
use azureiotsecurity::config::twin::{DesiredState, STATUS_NAME, Step};
use serde_json::{Value, json};

use crate::support;

/// The ```json blocks of the README's "Module twin" section, in order.
fn readme_twin_examples() -> Vec<Value> {
    let readme = std::fs::read_to_string(support::root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Module twin\n"))
        .expect("a \"Module twin\" section in the README");
    section
        .split("```json\n")
        .skip(1)
        .map(|b| {
            let text = b.split("\n```").next().expect("a closed block");
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("a README example that is not JSON ({e}):\n{text}"))
        })
        .collect()
}

#[test]
fn the_readmes_example_patch_applies_and_gives_its_reported_example() {
    let examples = readme_twin_examples();
    let [patch, reported] = &examples[..] else {
        panic!("two examples, a patch and the reported properties: {examples:#?}")
    };
    assert!(patch[OBJECT_NAME].is_object(), "{patch:#}");
    // On the published defaults (no local [agent] settings), at $version 4, the example
    // patch is version 5.
    let mut state = DesiredState::new(AgentConfig::default());
    state.on_document(&json!({"$version": 4}));
    let version = patch["$version"].as_i64();
    assert_eq!(version, Some(5));
    let step = state.on_patch(version, patch);
    assert!(
        matches!(&step, Step::Applied { errors, .. } if errors.is_empty()),
        "{step:?}"
    );
    let status = &reported[STATUS_NAME];
    let agent_id = status["agentId"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .expect("the example's agentId is a UUID");
    let module_version = status["moduleVersion"].as_str().expect("a module version");
    // Within edgeHub's reported-property limits (the Proton stand-in applies the same rules).
    assert_eq!(
        azureiotsecurity::edge::amqp::twin::reported_error(reported),
        None
    );
    let got = state.reported(agent_id, module_version);
    assert_eq!(
        got, *reported,
        "the README's reported example is not what the module reports:\n{got:#}"
    );
}

//! The deployment files agree with the code: both templates (`deployment.template.json`,
//! production, and `deployment.debug.template.json`) mount the socket's directory and the data
//! directory where the settings look for them, route what the module sends, keep every module's
//! least privilege, and set only settings the module accepts (the library's loader and the
//! binary's `check-config`); the debug one is the production one plus debug logging, try-out
//! and the echo module from the same image running the binary's `echo`; `module.json` and the
//! Dockerfiles build the static musl binary from the lock file for each platform and start it
//! with the README's command. The module's CPU, memory and pids limits are there (that the
//! module holds to them under the load capture, with the Proton stand-in, is
//! `tests/deployment_load.rs`). File reading and library calls only (plus `--help` and
//! `check-config` of the built binary).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use azureiotsecurity::config::agent::{self as agent_config, AgentConfig, OBJECT_NAME};
use azureiotsecurity::config::settings::{ENV_PREFIX, Settings};
use azureiotsecurity::edge::amqp::telemetry::events_address;

use crate::support::manifest::{
    DEBUG_TEMPLATE, ECHO, LIMIT_KEYS, MODULE, TEMPLATE, TEMPLATES, agent_desired, at,
    create_options, debug_manifest, limits, limits_of, manifest, module, module_named,
    module_names, modules_content, read, routes, template,
};

/// The environment variables the templates leave to the operator (`envsubst` form; iotedgedev
/// fills them from its `.env`).
const ENV_PLACEHOLDERS: [&str; 3] = [
    "CONTAINER_REGISTRY_SERVER",
    "CONTAINER_REGISTRY_USERNAME",
    "CONTAINER_REGISTRY_PASSWORD",
];

/// The image placeholder: iotedgedev's `${MODULEDIR<relative path>}` (`constants.py`
/// `moduledir_placeholder_pattern`), the image it builds from the `module.json` in that
/// directory for the platform asked for; this repository is that directory.
const IMAGE_PLACEHOLDER: &str = "${MODULEDIR<.>}";

/// The directory the audit socket is in, on the host and in the container (agreed for issue
/// 13: auditd's own default from 4.1.2; `scripts/setup-host.sh` puts it there on older ones).
const SOCKET_DIR: &str = "/run/audit";

/// A module's environment as the container gets it.
fn env_of(module: &Value) -> HashMap<String, String> {
    at(module, &["env"])
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = at(v, &["value"]);
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect()
}

/// The module's environment as the container gets it.
fn module_env(m: &Value) -> HashMap<String, String> {
    env_of(module(m))
}

/// The settings a module runs with under its environment (defaults < env).
fn settings_of(module: &Value) -> Settings {
    let env: HashMap<String, String> = env_of(module)
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    Settings::load_from(None, Some(env))
        .unwrap_or_else(|e| panic!("the manifest's environment is refused by the settings: {e}"))
}

/// The settings the module runs with under the manifest's environment (defaults < env).
fn effective_settings(m: &Value) -> Settings {
    settings_of(module(m))
}

#[derive(Debug, Clone, PartialEq)]
struct Mount {
    kind: String,
    source: String,
    target: PathBuf,
    read_only: bool,
}

/// `HostConfig.Mounts` and `HostConfig.Binds` as one list.
fn mounts(create: &Value) -> Vec<Mount> {
    let host = create.get("HostConfig").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    for m in host
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        out.push(Mount {
            kind: s("Type"),
            source: s("Source"),
            target: PathBuf::from(s("Target")),
            read_only: m.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    for b in host
        .get("Binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parts: Vec<&str> = b.as_str().unwrap().split(':').collect();
        let source = parts[0].to_owned();
        out.push(Mount {
            kind: if source.starts_with('/') {
                "bind"
            } else {
                "volume"
            }
            .to_owned(),
            source,
            target: PathBuf::from(parts[1]),
            read_only: parts
                .get(2)
                .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        });
    }
    out
}

/// The socket path scripts/setup-host.sh configures auditd's af_unix plugin with.
fn host_socket_of_setup_script() -> PathBuf {
    let script = read("scripts/setup-host.sh");
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("SOCKET="))
        .expect("scripts/setup-host.sh sets SOCKET=");
    PathBuf::from(line.trim().trim_matches('"'))
}

#[test]
fn the_templates_are_schema_1_1_manifests_with_the_runtime_and_their_modules() {
    for (name, expected) in [
        (TEMPLATE, vec![MODULE]),
        (DEBUG_TEMPLATE, vec![MODULE, ECHO]),
    ] {
        let m = template(name);
        let content = modules_content(&m);
        assert!(content.contains_key("$edgeAgent") && content.contains_key("$edgeHub"));
        assert_eq!(at(agent_desired(&m), &["schemaVersion"]), "1.1", "{name}");
        assert_eq!(
            at(
                &m,
                &[
                    "modulesContent",
                    "$edgeHub",
                    "properties.desired",
                    "schemaVersion"
                ]
            ),
            "1.1",
            "{name}"
        );
        let system = at(agent_desired(&m), &["systemModules"]);
        for (sys, image) in [
            ("edgeAgent", "mcr.microsoft.com/azureiotedge-agent:"),
            ("edgeHub", "mcr.microsoft.com/azureiotedge-hub:"),
        ] {
            let got = at(system, &[sys, "settings", "image"]).as_str().unwrap();
            assert!(got.starts_with(image), "{name}: {sys} image {got}");
            create_options(at(system, &[sys]));
        }
        assert_eq!(module_names(&m), expected, "{name}: the modules deployed");
        for module_name in expected {
            let module = module_named(&m, module_name);
            assert_eq!(at(module, &["type"]), "docker");
            assert_eq!(at(module, &["status"]), "running");
            assert_eq!(at(module, &["restartPolicy"]), "always");
            // Every module is the image module.json builds (the echo is the same binary).
            assert_eq!(
                at(module, &["settings", "image"]),
                IMAGE_PLACEHOLDER,
                "{name}: {module_name}"
            );
        }
    }
}

/// `text` with the placeholders replaced as the README's substitution does: the image
/// placeholder by `image` (sed), and the environment variables the README's `envsubst`
/// format names by `value` (envsubst replaces only those, so `$upstream`, `$edgeAgent` and
/// `$edgeHub` stay).
fn fill_as_the_readme_says(text: &str, image: &str, value: &str) -> String {
    let readme = read("README.md");
    let line = readme
        .lines()
        .find(|l| l.contains("envsubst '"))
        .expect("README has the envsubst command with its variables");
    let format = line
        .split("envsubst '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let named: BTreeSet<&str> = format
        .split_whitespace()
        .map(|v| v.trim_start_matches('$'))
        .collect();
    assert_eq!(
        named,
        ENV_PLACEHOLDERS.into_iter().collect(),
        "the README's envsubst names exactly the templates' variables: {line}"
    );
    assert!(
        line.contains("s|\\${MODULEDIR<.>}|"),
        "the README's sed fills the image placeholder: {line}"
    );
    let mut filled = text.replace(IMAGE_PLACEHOLDER, image);
    for p in named {
        filled = filled.replace(&format!("${{{p}}}"), value);
    }
    filled
}

#[test]
fn placeholders_are_the_dev_tools_ones_never_settings_and_the_readme_fills_them() {
    for name in TEMPLATES {
        let text = read(name);
        let found: BTreeSet<String> = text
            .split("${")
            .skip(1)
            .map(|rest| format!("${{{}}}", rest.split('}').next().unwrap()))
            .collect();
        let expected: BTreeSet<String> = ENV_PLACEHOLDERS
            .iter()
            .map(|p| format!("${{{p}}}"))
            .chain([IMAGE_PLACEHOLDER.to_owned()])
            .collect();
        assert_eq!(found, expected, "{name}");
        for p in ENV_PLACEHOLDERS {
            // An exported AZUREIOTSECURITY_* variable is read as a setting (and an unknown one
            // stops the module), so the template's variables must not use that prefix.
            assert!(!p.starts_with(ENV_PREFIX), "{p}");
        }
        // `${MODULEDIR<.>}`: module.json is in that directory.
        assert!(
            crate::support::root()
                .join(".")
                .join("module.json")
                .is_file(),
            "{IMAGE_PLACEHOLDER} names the directory of module.json"
        );
        let filled = fill_as_the_readme_says(&text, "reg.example/azureiotsecurity:x", "example");
        let filled: Value =
            serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{name} filled: {e}"));
        for module_name in module_names(&filled) {
            assert_eq!(
                at(module_named(&filled, &module_name), &["settings", "image"]),
                "reg.example/azureiotsecurity:x"
            );
        }
        assert_eq!(
            at(
                agent_desired(&filled),
                &[
                    "runtime",
                    "settings",
                    "registryCredentials",
                    "registry",
                    "address"
                ]
            ),
            "example"
        );
        // What is not a placeholder survives the substitution.
        assert!(
            routes(&filled)
                .iter()
                .all(|(_, r)| r.ends_with("INTO $upstream") || r.contains("BrokeredEndpoint(")),
            "{:?}",
            routes(&filled)
        );
        assert_eq!(routes(&filled), routes(&template(name)));
    }
}

#[test]
fn the_socket_directory_mounted_is_the_one_the_settings_read_and_the_setup_script_makes() {
    for name in TEMPLATES {
        let m = template(name);
        let settings = effective_settings(&m);
        // The templates rely on the defaults: if they change, the mounts must follow.
        assert_eq!(
            settings.audit.socket_path,
            Settings::default().audit.socket_path
        );
        let socket = settings.audit.socket_path;
        assert_eq!(socket, host_socket_of_setup_script());
        assert_eq!(socket.parent(), Some(Path::new(SOCKET_DIR)), "{name}");

        let all = mounts(&create_options(module(&m)));
        let covering: Vec<&Mount> = all
            .iter()
            .filter(|mt| mt.kind == "bind" && socket.starts_with(&mt.target))
            .collect();
        assert_eq!(
            covering.len(),
            1,
            "{name}: one bind mount reaches {socket:?}: {all:?}"
        );
        let mt = covering[0];
        // The socket's own directory, not the socket file: auditd re-creates the socket (a
        // new inode) on every restart, and a file bind keeps the old one.
        assert_eq!(mt.target, Path::new(SOCKET_DIR), "{name}: {mt:?}");
        // The host's directory appears at the same path in the container.
        assert_eq!(Path::new(&mt.source), mt.target, "{name}: {mt:?}");
        // Never a whole /run (docker.sock, the IoT Edge sockets), which would undo the least
        // privilege the module promises.
        for broad in ["/", "/run", "/var/run", "/var"] {
            assert_ne!(
                mt.target,
                Path::new(broad),
                "{name}: {mt:?} mounts all of {broad}"
            );
        }
        assert!(
            mt.read_only,
            "{name}: the socket is mounted read-only: {mt:?}"
        );
    }
}

/// Where the templates mount the host's root for the snapshots.
const HOST_ROOT: &str = "/host";

/// The host root the snapshots read (`host.root`) is where the templates mount the host's
/// `/`, read-only: the root file system alone (not recursive, so the host's `/run` with
/// docker.sock and the IoT Edge sockets stays out: read-only does not stop connect()), and
/// the host's `/proc` and `/sys` beside it, read-only too.
#[test]
fn the_host_root_is_mounted_read_only_where_host_root_points() {
    for name in TEMPLATES {
        let m = template(name);
        let settings = effective_settings(&m);
        assert_eq!(settings.host.root, Path::new(HOST_ROOT), "{name}");
        let create = create_options(module(&m));
        let all = mounts(&create);
        let under: Vec<&Mount> = all
            .iter()
            .filter(|mt| mt.target.starts_with(HOST_ROOT))
            .collect();
        let pairs: Vec<(String, PathBuf)> = under
            .iter()
            .map(|mt| (mt.source.clone(), mt.target.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/".to_owned(), PathBuf::from("/host")),
                ("/proc".to_owned(), PathBuf::from("/host/proc")),
                ("/sys".to_owned(), PathBuf::from("/host/sys")),
            ],
            "{name}"
        );
        for mt in &under {
            assert_eq!(mt.kind, "bind", "{name}: {mt:?}");
            assert!(
                mt.read_only,
                "{name}: the host is mounted read-only: {mt:?}"
            );
        }
        // The root's bind is not recursive: no submount of the host (its /run) comes along.
        let root = at(&create, &["HostConfig", "Mounts"])
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Target"] == HOST_ROOT)
            .unwrap();
        assert_eq!(root["BindOptions"]["NonRecursive"], true, "{name}: {root}");
    }
}

#[test]
fn the_data_directory_is_a_writable_volume_where_the_settings_keep_the_outbox() {
    for name in TEMPLATES {
        let m = template(name);
        let settings = effective_settings(&m);
        assert_eq!(
            settings.module.data_dir,
            Settings::default().module.data_dir
        );
        let all = mounts(&create_options(module(&m)));
        let data: Vec<&Mount> = all
            .iter()
            .filter(|mt| mt.target == settings.module.data_dir)
            .collect();
        assert_eq!(data.len(), 1, "{name}: {all:?}");
        assert_eq!(data[0].kind, "volume", "{name}: {:?}", data[0]);
        assert!(!data[0].source.is_empty(), "a named volume: {:?}", data[0]);
        assert!(!data[0].read_only);
    }
}

#[test]
fn every_module_runs_with_least_privilege() {
    for name in TEMPLATES {
        let m = template(name);
        for module_name in module_names(&m) {
            let create = create_options(module_named(&m, &module_name));
            let host = at(&create, &["HostConfig"]);
            let what = format!("{name}: {module_name}");
            assert_ne!(host.get("Privileged"), Some(&Value::Bool(true)), "{what}");
            assert_eq!(
                host.get("NetworkMode"),
                None,
                "{what}: the edge network, not the host's"
            );
            assert_eq!(
                host.get("PidMode"),
                None,
                "{what}: the module reads no other process"
            );
            assert_eq!(
                at(host, &["CapDrop"]),
                &serde_json::json!(["ALL"]),
                "{what}"
            );
            assert_eq!(host.get("CapAdd"), None, "{what}");
            assert_eq!(at(host, &["ReadonlyRootfs"]), true, "{what}");
            assert!(
                at(host, &["SecurityOpt"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o
                        .as_str()
                        .is_some_and(|o| o.starts_with("no-new-privileges"))),
                "{what}: {host}"
            );
            assert_eq!(
                host.get("PortBindings"),
                None,
                "{what}: nothing published on the host"
            );
            assert_eq!(host.get("Devices"), None, "{what}");
            let targets: BTreeSet<PathBuf> =
                mounts(&create).into_iter().map(|m| m.target).collect();
            if module_name == MODULE {
                // With a read-only root, SQLite's temporary files need a writable /tmp.
                assert!(at(host, &["Tmpfs"]).get("/tmp").is_some(), "{what}: {host}");
                // Only the socket's directory, the data volume and the host root's three
                // read-only binds (see the_host_root_is_mounted_read_only_…).
                let settings = Settings::default();
                assert_eq!(
                    targets,
                    [
                        PathBuf::from(SOCKET_DIR),
                        settings.module.data_dir,
                        PathBuf::from(HOST_ROOT),
                        PathBuf::from(HOST_ROOT).join("proc"),
                        PathBuf::from(HOST_ROOT).join("sys"),
                    ]
                    .into_iter()
                    .collect(),
                    "{what}"
                );
            } else {
                // The echo reads nothing from the host and keeps nothing: no mounts at all.
                assert_eq!(targets, BTreeSet::new(), "{what}");
            }
        }
    }
}

#[test]
fn every_setting_in_the_environment_is_accepted_and_metrics_are_exposed_where_served() {
    for name in TEMPLATES {
        let m = template(name);
        let env = module_env(&m);
        assert!(env.contains_key("RuntimeLogLevel"), "{name}: {env:?}");
        let settings = effective_settings(&m);
        let (_, errors) = agent_config::check_report(&settings);
        assert!(
            errors.is_empty(),
            "{name}: agent settings refused: {errors:?}"
        );
        // The template turns /metrics on; the port the module listens on is the one exposed.
        assert!(settings.metrics.enabled, "{name}");
        let port = settings
            .metrics
            .listen
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .port();
        let create = create_options(module(&m));
        let exposed: Vec<&String> = at(&create, &["ExposedPorts"])
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(exposed, [&format!("{port}/tcp")], "{name}");
    }
}

/// `azureiotsecurity check-config` run with exactly a module's environment (what the container
/// gets from the manifest), as its JSON; a failure names the template and the module.
fn check_config_with_env_of(what: &str, module: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(module);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .arg("check-config")
        .env_clear()
        .envs(&env)
        // The kept twin configuration is read from the data directory: a fresh one here, so
        // nothing on this machine decides the result (only when the manifest leaves it).
        .env(
            "AZUREIOTSECURITY_MODULE__DATA_DIR",
            env.get("AZUREIOTSECURITY_MODULE__DATA_DIR")
                .cloned()
                .unwrap_or_else(|| dir.path().display().to_string()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: check-config refuses the manifest's environment {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: check-config: {e}"))
}

#[test]
fn the_binarys_check_config_accepts_every_modules_environment_in_both_templates() {
    for name in TEMPLATES {
        let m = template(name);
        for module_name in module_names(&m) {
            let module = module_named(&m, &module_name);
            let what = format!("{name}: {module_name}");
            let effective = check_config_with_env_of(&what, module);
            // Every variable is RuntimeLogLevel (edgeAgent's) or a setting of the module's.
            for key in env_of(module).keys() {
                assert!(
                    key == "RuntimeLogLevel" || key.starts_with(ENV_PREFIX),
                    "{what}: {key} is neither RuntimeLogLevel nor a setting"
                );
            }
            if module_name == MODULE {
                let settings = settings_of(module);
                assert_eq!(
                    effective["audit"]["socket_path"],
                    settings.audit.socket_path.display().to_string(),
                    "{what}"
                );
                assert_eq!(
                    effective["module"]["tryout"],
                    name == DEBUG_TEMPLATE,
                    "{what}: try-out is on in the debug template only"
                );
                assert_eq!(effective["metrics"]["enabled"], true, "{what}");
            }
        }
    }
    // The check is real: an unknown setting is refused by the binary.
    let bad = serde_json::json!({"env": {"AZUREIOTSECURITY_MODULE__TRYOTU": {"value": "true"}}});
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .arg("check-config")
        .env_clear()
        .envs(env_of(&bad))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn the_debug_template_is_the_production_one_with_debug_logging_tryout_and_the_echo() {
    let (prod, debug) = (manifest(), debug_manifest());
    // The runtime, edgeAgent and edgeHub are the production ones.
    for path in [
        &["runtime"][..],
        &["systemModules"][..],
        &["schemaVersion"][..],
    ] {
        assert_eq!(
            at(agent_desired(&prod), path),
            at(agent_desired(&debug), path)
        );
    }
    let hub = |m: &Value| {
        let mut h = at(m, &["modulesContent", "$edgeHub", "properties.desired"]).clone();
        h.as_object_mut().unwrap().remove("routes");
        h
    };
    assert_eq!(hub(&prod), hub(&debug));
    // The module: the same entry but for its environment.
    let strip_env = |m: &Value| {
        let mut e = module(m).clone();
        e.as_object_mut().unwrap().remove("env");
        e
    };
    assert_eq!(strip_env(&prod), strip_env(&debug));
    let (mut prod_env, mut debug_env) = (module_env(&prod), module_env(&debug));
    assert_eq!(prod_env.remove("RuntimeLogLevel").as_deref(), Some("info"));
    assert_eq!(
        debug_env.remove("RuntimeLogLevel").as_deref(),
        Some("debug")
    );
    let tryout = format!("{ENV_PREFIX}_MODULE__TRYOUT");
    assert_eq!(
        prod_env.get(&tryout),
        None,
        "production: the published intervals"
    );
    assert_eq!(debug_env.remove(&tryout).as_deref(), Some("true"));
    assert_eq!(
        prod_env, debug_env,
        "the rest of the environment is the same"
    );
    assert!(effective_settings(&debug).module.tryout);
    assert!(!effective_settings(&prod).module.tryout);
    // No twin for the echo: it has no agent configuration.
    assert!(!modules_content(&debug).contains_key(ECHO));
}

/// The binary's subcommands, from `azureiotsecurity --help`.
fn subcommands() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("Commands:")
        .nth(1)
        .expect("--help lists Commands:")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A subcommand's line is indented by two; its wrapped description by more.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_echo_module_runs_the_binarys_echo_command_and_listens_where_the_route_delivers() {
    let m = debug_manifest();
    let echo = module_named(&m, ECHO);
    let create = create_options(echo);
    let command: Vec<String> = serde_json::from_value(at(&create, &["Cmd"]).clone())
        .expect("the echo's Cmd is a list of strings");
    assert_eq!(
        command.first().map(String::as_str),
        Some("echo"),
        "{command:?}"
    );
    // The image's entry point takes it: `echo` is a subcommand of the binary, and the
    // arguments the manifest gives are ones it accepts (`--help` after them parses them).
    let commands = subcommands();
    assert!(commands.contains("echo"), "{commands:?}");
    assert!(commands.contains("run"), "{commands:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .args(&command)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{command:?} --help: {out:?}");
    // The module's entry has no Cmd: the image's default, `run`.
    assert_eq!(create_options(module(&m)).get("Cmd"), None);
    // The route's input is one the echo takes (all of them unless --inputs names some).
    let inputs: Option<Vec<String>> = command
        .iter()
        .position(|a| a == "--inputs")
        .map(|i| command[i + 1].split(',').map(str::to_owned).collect());
    for (_, route) in routes(&m) {
        if let Some(input) = route
            .split(&format!("BrokeredEndpoint(\"/modules/{ECHO}/inputs/"))
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            assert!(
                inputs.as_ref().is_none_or(|i| i.iter().any(|i| i == input)),
                "{route}: the echo takes {inputs:?}"
            );
        }
    }
    // Limits, as for the module.
    let l = limits_of(echo);
    assert!(l.memory >= 6 << 20 && l.memory_swap == l.memory, "{l:?}");
    assert!(l.nano_cpus > 0 && l.pids > 0, "{l:?}");
}

#[test]
fn the_routes_take_what_the_module_sends_upstream_and_in_debug_to_the_echo() {
    // What the module's sender link targets, and edgeHub's name for that source.
    let address = events_address("device", Some(MODULE));
    assert!(
        address.ends_with(&format!("/modules/{MODULE}/messages/events")),
        "{address}"
    );
    let upstream = format!("FROM /messages/modules/{MODULE}/* INTO $upstream");
    let to_echo = format!(
        "FROM /messages/modules/{MODULE}/* INTO BrokeredEndpoint(\"/modules/{ECHO}/inputs/input1\")"
    );
    for (name, expected) in [
        (TEMPLATE, vec![upstream.clone()]),
        (DEBUG_TEMPLATE, vec![upstream.clone(), to_echo.clone()]),
    ] {
        let m = template(name);
        // The twin's routes are an object: compared in order of their texts.
        let mut texts: Vec<String> = routes(&m).into_iter().map(|(_, r)| r).collect();
        texts.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(texts, expected, "{name}");
        // Every module a route names is deployed: as a source and as a BrokeredEndpoint
        // (edgeHub's form is exactly `/modules/{module}/inputs/{input}`).
        let deployed: BTreeSet<String> = module_names(&m).into_iter().collect();
        for t in &texts {
            for part in t.split("/messages/modules/").skip(1) {
                let from = part.split('/').next().unwrap().to_owned();
                assert!(
                    deployed.contains(&from),
                    "{name}: {t} names {from}, not deployed"
                );
            }
            if let Some(endpoint) = t.split("BrokeredEndpoint(\"").nth(1) {
                let path = endpoint.split('"').next().unwrap();
                let parts: Vec<&str> = path.split('/').collect();
                assert_eq!(parts.len(), 5, "{name}: {path}");
                assert_eq!(
                    (parts[0], parts[1], parts[3]),
                    ("", "modules", "inputs"),
                    "{path}"
                );
                assert!(
                    deployed.contains(parts[2]),
                    "{name}: {t} names {}, not deployed",
                    parts[2]
                );
                assert!(!parts[4].is_empty(), "{path}");
            }
        }
    }
}

/// Problems with the agent configuration in a module twin's desired properties: every key
/// must be one `agent_config::apply` knows, with a value it takes without any error.
fn twin_problems(desired: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(object) = desired.as_object() else {
        return vec![format!("properties.desired is not an object: {desired}")];
    };
    for key in object.keys() {
        if key != OBJECT_NAME {
            problems.push(format!("{key} is not {OBJECT_NAME}"));
        }
    }
    if let Some(update) = object.get(OBJECT_NAME) {
        let applied = agent_config::apply(&AgentConfig::default(), update);
        if applied.rejected {
            problems.push("the update is rejected".to_owned());
        }
        problems.extend(
            applied
                .ignored
                .iter()
                .map(|k| format!("unknown setting {k}")),
        );
        problems.extend(
            applied
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.configuration_name, e.message)),
        );
    }
    problems
}

#[test]
fn desired_twin_settings_if_any_are_ones_the_agent_configuration_accepts() {
    let mut checked = BTreeMap::new();
    for template_name in TEMPLATES {
        let m = template(template_name);
        for (name, twin) in modules_content(&m) {
            if name.starts_with('$') {
                continue;
            }
            assert_eq!(name, MODULE, "a twin for a module that is not deployed");
            let problems = twin_problems(at(twin, &["properties.desired"]));
            checked.insert(format!("{template_name}: {name}"), problems);
        }
    }
    for (name, problems) in &checked {
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
    // The check is real: it finds what the agent configuration refuses or ignores.
    let bad = serde_json::json!({ OBJECT_NAME: {
        "maxMessageSizeInBytes": {"value": 1},
        "noSuchSetting": {"value": true},
    }});
    let problems = twin_problems(&bad);
    assert!(
        problems.iter().any(|p| p.contains("noSuchSetting")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("maxMessageSizeInBytes")),
        "{problems:?}"
    );
    let good = serde_json::json!({ OBJECT_NAME: {
        "highPriorityMessageFrequency": {"value": "PT5M"},
        "eventPriorityLogin": {"value": "High"},
    }});
    assert_eq!(twin_problems(&good), Vec::<String>::new());
}

/// A Dockerfile's instructions: (keyword upper-cased, arguments), continuation lines joined,
/// comments dropped.
fn instructions(name: &str) -> Vec<(String, String)> {
    let text = read(name);
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap();
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "{name} ends in a continuation line");
    out
}

/// The command the README documents for the module: `azureiotsecurity run`.
fn readme_run_command() -> Vec<String> {
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `azureiotsecurity run"))
        .expect("README's command table has azureiotsecurity run");
    let cmd = row.trim_start_matches("| `").split('`').next().unwrap();
    cmd.split_whitespace()
        .take_while(|w| !w.starts_with('['))
        .map(str::to_owned)
        .collect()
}

fn entrypoint(name: &str) -> Vec<String> {
    let all: Vec<String> = instructions(name)
        .into_iter()
        .filter(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    serde_json::from_str(&all[0])
        .unwrap_or_else(|e| panic!("{name}: ENTRYPOINT is not the exec form: {e}"))
}

/// The platforms the image is built for: the dev tools' name (module.json, the image tag's
/// suffix, `Dockerfile.<name>`), Docker's `--platform`, and the Rust target the Dockerfile
/// cross-compiles for.
const PLATFORMS: [(&str, &str, &str); 3] = [
    ("amd64", "linux/amd64", "x86_64-unknown-linux-musl"),
    ("arm32v7", "linux/arm/v7", "armv7-unknown-linux-musleabihf"),
    ("arm64v8", "linux/arm64", "aarch64-unknown-linux-musl"),
];

/// The `ENV` assignments of a Dockerfile (`ENV K=V K2="V 2"` forms), quotes removed.
fn env_assignments(ins: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (_, args) in ins.iter().filter(|(k, _)| k == "ENV") {
        let mut rest = args.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("ENV {args}"));
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let (v, a) = quoted
                        .split_once('"')
                        .unwrap_or_else(|| panic!("ENV {args}"));
                    (v, a)
                }
                None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
            };
            out.insert(key.trim().to_owned(), value.to_owned());
            rest = after.trim();
        }
    }
    out
}

#[test]
fn every_dockerfile_cross_compiles_the_static_musl_binary_from_the_lock_file() {
    for (platform, docker_platform, target) in PLATFORMS {
        let name = format!("Dockerfile.{platform}");
        let ins = instructions(&name);
        let froms: Vec<&String> = ins
            .iter()
            .filter(|(k, _)| k == "FROM")
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            froms.len(),
            2,
            "{name}: a build stage and the image: {froms:?}"
        );
        // The compiler runs on the builder's platform (no emulation), whatever the image's.
        assert!(
            froms[0].starts_with("--platform=$BUILDPLATFORM "),
            "{name}: the build stage is not on the builder's platform: {}",
            froms[0]
        );
        // The image holds the binary and nothing else.
        assert_eq!(froms[1], "scratch", "{name}");
        // buildx's target platform is declared in the stage and must be this file's.
        assert!(
            ins.iter().any(|(k, a)| k == "ARG" && a == "TARGETPLATFORM"),
            "{name}: no ARG TARGETPLATFORM"
        );
        let runs: Vec<&String> = ins
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, a)| a)
            .collect();
        assert!(
            runs.iter().any(|r| {
                let r = r.split_whitespace().collect::<Vec<_>>().join(" ");
                r.starts_with(&format!(
                    "[ \"$TARGETPLATFORM\" = {docker_platform} ] || {{"
                )) && r.contains("exit 1")
            }),
            "{name}: does not refuse a --platform other than {docker_platform}"
        );
        // The ARM recipe: rust-src for build-std, zig and cargo-zigbuild pinned from PyPI.
        assert!(
            runs.iter()
                .any(|r| r.contains("rustup component add rust-src")),
            "{name}: no rust-src"
        );
        let pip = runs
            .iter()
            .find(|r| r.contains("pip install"))
            .unwrap_or_else(|| panic!("{name}: no pip install"));
        for pinned in ["ziglang==", "cargo-zigbuild=="] {
            assert!(pip.contains(pinned), "{name}: {pinned} not pinned: {pip}");
        }
        let env = env_assignments(&ins);
        assert_eq!(
            env.get("RUSTC_BOOTSTRAP").map(String::as_str),
            Some("1"),
            "{name}"
        );
        assert_eq!(
            env.get("RUSTFLAGS").map(String::as_str),
            Some("-C link-self-contained=no"),
            "{name}"
        );
        let build = runs
            .iter()
            .find(|r| r.contains("cargo zigbuild"))
            .unwrap_or_else(|| panic!("{name}: no cargo zigbuild"));
        let words: Vec<&str> = build.split_whitespace().collect();
        for flag in [
            "--profile",
            "--locked",
            "-Zbuild-std=std,panic_abort",
            "--bin",
            "--target",
        ] {
            assert!(
                words.contains(&flag),
                "{name}: cargo zigbuild without {flag}: {build}"
            );
        }
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        assert_eq!(after("--target"), Some(target), "{name}: {build}");
        assert_eq!(after("--bin"), Some("azureiotsecurity"), "{name}: {build}");
        // The image profile (Cargo.toml), as scripts/build-arm.sh builds it.
        assert_eq!(after("--profile"), Some("image"), "{name}: {build}");
        assert!(
            build.contains(&format!("target/{target}/image/azureiotsecurity")),
            "{name}: the binary is not taken from target/{target}/image: {build}"
        );
        // No OpenSSL is installed or built against (comments aside).
        for (k, a) in &ins {
            let a = a.to_ascii_lowercase();
            assert!(
                !a.contains("openssl") && !a.contains("libssl"),
                "{name}: {k} {a}"
            );
        }
        // Root for the socket (auditd makes it root:root 0640); the manifest drops every
        // capability.
        let user: Vec<&String> = ins
            .iter()
            .filter(|(k, _)| k == "USER")
            .map(|(_, a)| a)
            .collect();
        assert_eq!(user, ["0:0"], "{name}");
        // The entrypoint is the file the image copies in.
        let copy = ins
            .iter()
            .rev()
            .find(|(k, _)| k == "COPY")
            .map(|(_, a)| a.as_str())
            .unwrap();
        let dest = copy.split_whitespace().last().unwrap();
        assert_eq!(entrypoint(&name), [dest], "{name}: {copy}");
    }
    // Nothing in the dependency graph links OpenSSL or native TLS.
    let lock = read("Cargo.lock");
    for crate_name in ["openssl-sys", "openssl", "native-tls"] {
        assert!(
            !lock.contains(&format!("name = \"{crate_name}\"")),
            "Cargo.lock has {crate_name}"
        );
    }
}

/// A Dockerfile's `CMD`, in the exec form.
fn cmd(name: &str) -> Vec<String> {
    let all: Vec<String> = instructions(name)
        .into_iter()
        .filter(|(k, _)| k == "CMD")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    serde_json::from_str(&all[0])
        .unwrap_or_else(|e| panic!("{name}: CMD is not the exec form: {e}"))
}

#[test]
fn every_dockerfile_starts_the_program_with_the_readmes_run_command_by_default() {
    let readme = readme_run_command();
    assert_eq!(readme, ["azureiotsecurity", "run"]);
    for (platform, _, _) in PLATFORMS {
        let name = format!("Dockerfile.{platform}");
        // The entry point is the program alone, so a manifest's Cmd chooses the command.
        let program = entrypoint(&name);
        assert_eq!(program.len(), 1, "{name}: {program:?}");
        let program = Path::new(&program[0]);
        assert!(
            program.is_absolute(),
            "{program:?}: scratch has no PATH to search"
        );
        assert_eq!(program.file_name().unwrap(), readme[0].as_str());
        assert_eq!(cmd(&name), readme[1..], "{name}: the default command");
    }
    // And the binary takes that command: `azureiotsecurity run --help` is the module's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .args(&readme[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.starts_with("Run the module"), "{help}");
}

#[test]
fn module_json_is_the_dev_tools_layout_for_this_version_and_every_dockerfile() {
    let m: Value =
        serde_json::from_str(&read("module.json")).unwrap_or_else(|e| panic!("module.json: {e}"));
    assert_eq!(m["$schema-version"], "0.0.1", "{m}");
    assert!(
        m["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{m}"
    );
    let image = &m["image"];
    // iotedgedev tags `{repository lower-cased}:{version}-{platform}`: the registry is the
    // placeholder its .env fills, the name the module's.
    assert_eq!(
        image["repository"], "${CONTAINER_REGISTRY_SERVER}/azureiotsecurity",
        "{m}"
    );
    assert_eq!(
        image["tag"]["version"],
        env!("CARGO_PKG_VERSION"),
        "module.json's version is Cargo.toml's"
    );
    let platforms = image["tag"]["platforms"]
        .as_object()
        .unwrap_or_else(|| panic!("module.json has no image.tag.platforms: {m}"));
    let expected: BTreeMap<String, String> = PLATFORMS
        .iter()
        .map(|(p, _, _)| (p.to_string(), format!("./Dockerfile.{p}")))
        .collect();
    let got: BTreeMap<String, String> = platforms
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(got, expected);
    // The build context is the repository root, where the Dockerfiles' COPY sources are.
    assert_eq!(image["contextPath"], "./", "{m}");
    assert!(image["buildOptions"].is_array(), "{m}");
    // Every Dockerfile in the repository is one module.json builds.
    let on_disk: BTreeSet<String> = std::fs::read_dir(crate::support::root())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("Dockerfile"))
        .map(|n| format!("./{n}"))
        .collect();
    assert_eq!(on_disk, expected.values().cloned().collect());
}

#[test]
fn the_readme_builds_each_platforms_image_with_its_dockerfile_and_tag() {
    let readme = read("README.md");
    let version = env!("CARGO_PKG_VERSION");
    for (platform, docker_platform, _) in PLATFORMS {
        let line = readme
            .lines()
            .find(|l| {
                l.contains("docker buildx build")
                    && l.contains(&format!("-f Dockerfile.{platform} "))
            })
            .unwrap_or_else(|| panic!("README has no docker buildx line for {platform}"));
        assert!(
            line.contains(&format!("--platform {docker_platform} ")),
            "{line}"
        );
        assert!(
            line.contains(&format!("/azureiotsecurity:{version}-{platform} ")),
            "the tag iotedgedev would give: {line}"
        );
        // And the Dockerfile's own usage comment says the same.
        let text = read(&format!("Dockerfile.{platform}"));
        assert!(
            text.contains(&format!(
                "--platform {docker_platform} -f Dockerfile.{platform}"
            )) && text.contains(&format!("azureiotsecurity:{version}-{platform}")),
            "Dockerfile.{platform}'s usage comment"
        );
    }
}

// ---- resource limits ----

#[test]
fn the_module_has_memory_cpu_and_pids_limits_and_no_swap() {
    let m = manifest();
    let create = create_options(module(&m));
    let host = at(&create, &["HostConfig"]);
    let not_numbers: Vec<&str> = LIMIT_KEYS
        .into_iter()
        .filter(|k| host.get(*k).and_then(Value::as_u64).is_none_or(|n| n == 0))
        .collect();
    assert_eq!(
        not_numbers,
        Vec::<&str>::new(),
        "limits that are not positive integers"
    );
    let l = limits(&m);
    // The debug template runs the module with the same limits (tests/deployment_load.rs
    // measures them once for both).
    assert_eq!(limits(&debug_manifest()), l);
    // MemorySwap is memory + swap in Docker: equal means no swap, so the limit is the
    // limit (an outbox paged out to swap would be slow to read back).
    assert_eq!(l.memory_swap, l.memory, "{l:?}");
    // Whole MiB, at least what the measured peak needs twice (README "Deploying").
    assert_eq!(l.memory % (1 << 20), 0, "{l:?}");
    assert!(l.memory >= 2 * MEASURED_PEAK_RSS, "{l:?}");
    // At least the measured CPU rate at the load capture's pace, with room (README).
    assert!(l.nano_cpus >= 2 * MEASURED_LOAD_NANO_CPUS, "{l:?}");
    assert!(l.nano_cpus <= 4_000_000_000, "{l:?}");
    // The runtime's 2 worker threads, tokio's blocking pool and SQLite: far under it.
    assert!((64..=4096).contains(&l.pids), "{l:?}");
    // Docker refuses a memory limit under 6 MB, and CPU quotas need CFS: plain values.
    assert!(l.memory >= 6 << 20);
    // And the README says the same numbers.
    let readme = read("README.md");
    for (what, text) in [
        ("Memory", format!("`Memory` {} MiB", l.memory >> 20)),
        (
            "NanoCpus",
            format!("`NanoCpus` {}", l.nano_cpus as f64 / 1e9),
        ),
        ("PidsLimit", format!("`PidsLimit` {}", l.pids)),
    ] {
        assert!(readme.contains(&text), "README has no {text:?} for {what}");
    }
}

/// The peak RSS measured with the release binary (README "Deploying"), in bytes.
const MEASURED_PEAK_RSS: u64 = 37_265_408;
/// The CPU the release binary used for the load capture at its own pace (15 s), as
/// nano-CPUs (1e9 = one core).
const MEASURED_LOAD_NANO_CPUS: u64 = 330_000_000;

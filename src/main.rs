//! The `azureiotsecurity` command line.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use azureiotsecurity::collectors::{self, HostRoot};
use azureiotsecurity::config::settings::{Settings, SettingsError};
use azureiotsecurity::config::twin;
use azureiotsecurity::edge::credentials::Credentials;
use azureiotsecurity::edge::identity::{self, Identity};
use azureiotsecurity::{app, echo, rules};

#[derive(Parser)]
#[command(
    version,
    about = "Defender for IoT security module: auditd stream to security messages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the module: read auditd's af_unix socket and send the security messages to
    /// edgeHub when the IoT Edge environment (IOTEDGE_*) or a connection string
    /// (EdgeHubConnectionString, IotHubConnectionString) is present; otherwise print them as
    /// they are due (one JSON message per line).
    Run {
        /// Settings file (TOML); environment variables AZUREIOTSECURITY_<SECTION>__<KEY> override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print each security event as it is derived instead of messages (debugging).
        #[arg(long)]
        events: bool,
        /// Print the messages even when an IoT Edge identity is present.
        #[arg(long, conflicts_with = "events")]
        print: bool,
    },
    /// Audit log text (a file, or - for stdin) to security events, one JSON object per line,
    /// or with --messages to the security messages `run` would send for it.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the messages instead of the events.
        #[arg(long)]
        messages: bool,
        /// The AgentId of the messages (default: a fixed GUID, so output is reproducible).
        #[arg(long, default_value = "8a3b3c4e-5f60-4718-9a2b-3c4d5e6f7a80")]
        agent_id: uuid::Uuid,
        /// audit.log text; - or nothing for standard input.
        file: Option<PathBuf>,
    },
    /// Check security messages (JSON lines, a file or - for stdin) with the module's own
    /// schema rules; exit 1 and say why on any failure.
    Validate { file: Option<PathBuf> },
    /// The echo module: receive what edgeHub routes to this module's inputs and print one
    /// line per message (input, sender, message-id, enqueued time, properties, size, body; for
    /// a security message its events, MessagePriority, AgentId and the module's validation).
    /// Every message is accepted. Uses the module identity from the environment like `run`.
    Echo {
        /// Settings file (TOML): the `[edgehub]` connection settings are used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON object per message instead of a line.
        #[arg(long)]
        json: bool,
        /// Show only these inputs (comma-separated); the others are accepted, not shown.
        #[arg(long, value_delimiter = ',')]
        inputs: Vec<String>,
        /// Exit 0 after this many messages shown.
        #[arg(long)]
        count: Option<u64>,
        /// Exit 3 when the count (or, without one, any message) has not arrived within this
        /// many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Print the snapshots of the host (SystemInformation, LocalUsers, …) as the security
    /// events `run` sends, one JSON object per line, a large snapshot split into events that
    /// each fit a message. Reads files under the host root only: nothing of the host is
    /// executed or written.
    Snapshot {
        /// Settings file (TOML): `host.root` and the agent configuration's message size.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The host's `/` (default: the `host.root` setting, `/`).
        #[arg(long)]
        host_root: Option<PathBuf>,
    },
    /// Print the audit rules the module needs (auditctl -R format).
    Rules {
        /// Architecture (uname -m form: x86_64, i686, aarch64, armv7l); default: this machine's.
        #[arg(long)]
        arch: Option<String>,
    },
    /// Validate the settings and print the effective ones.
    CheckConfig {
        /// Settings file (TOML).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`… | head`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Settings out of range or that do not parse, or an IoT Edge environment that is
        // incomplete: a configuration problem, exit 1 (as check-config's own findings), so
        // that it is told apart from a failure while running.
        Err(e)
            if e.chain()
                .any(|c| c.is::<SettingsError>() || c.is::<identity::IdentityError>()) =>
        {
            eprintln!("azureiotsecurity: {e:#}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("azureiotsecurity: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr (stdout carries the output). `RUST_LOG` or `RuntimeLogLevel` (set by
/// IoT Edge's edgeAgent) choose the level; default info.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            let lvl = std::env::var("RuntimeLogLevel").unwrap_or_else(|_| "info".into());
            let lvl = match lvl.to_ascii_lowercase().as_str() {
                "verbose" | "trace" => "trace",
                "debug" => "debug",
                "warning" | "warn" => "warn",
                "error" | "fatal" => "error",
                _ => "info",
            };
            EnvFilter::try_new(lvl)
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: docker logs and files get plain key=value lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Rules { arch } => {
            let machine = match arch {
                Some(a) => a,
                None => uname_machine().context("reading the machine architecture")?,
            };
            let Some(arch) = rules::Arch::from_uname(&machine) else {
                bail!(
                    "unsupported architecture {machine:?} (x86_64, i386/i686, aarch64, arm* are)"
                );
            };
            let mut out = std::io::stdout().lock();
            out.write_all(rules::render(arch).as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Echo {
            config,
            json,
            inputs,
            count,
            timeout,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let Some(identity) = Identity::from_env(&identity::process_env())
                .context("reading the module identity from the environment")?
            else {
                bail!(
                    "echo needs a module identity: the IoT Edge environment (IOTEDGE_*) or EdgeHubConnectionString"
                );
            };
            tracing::info!(
                device = identity.device_id(),
                module = identity.module_id().unwrap_or("-"),
                endpoint = %identity.endpoint(),
                "echo: receiving this module's inputs"
            );
            tracing::info!("{}", echo::MARKER_NOTE);
            let credentials = Arc::new(Credentials::new(identity));
            let amqp = azureiotsecurity::config::stages::amqp(&settings.edgehub);
            let options = echo::EchoOptions {
                json,
                inputs,
                count,
                timeout: timeout.map(Duration::from_secs),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let result = rt.block_on(async move {
                let shutdown = Arc::new(tokio::sync::Notify::new());
                let sd = shutdown.clone();
                tokio::spawn(async move { signals(sd).await });
                echo::run(credentials, amqp, options, std::io::stdout(), shutdown).await
            });
            match result {
                Ok(n) => {
                    tracing::info!(messages = n, "echo: done");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (echo::EchoError::Nothing { .. } | echo::EchoError::TooFew { .. })) => {
                    eprintln!("azureiotsecurity echo: {e}");
                    Ok(ExitCode::from(3))
                }
                Err(e) => Err(e).context("echo"),
            }
        }
        Command::Snapshot { config, host_root } => {
            let settings = Settings::load(config.as_deref())?;
            let host = match host_root {
                Some(root) => HostRoot::new(root),
                None => settings.host.host_root(),
            };
            let applied = settings.agent_config();
            let output = &settings.edgehub.output_name;
            let limit =
                app::snapshot_event_limit(&applied.config, (!output.is_empty()).then_some(output));
            let opts = settings.snapshot.collect_options();
            let wall_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for c in collectors::REGISTRY {
                let snap = collectors::take(c, &host, &opts);
                for ev in collectors::events(&snap.payloads, wall_ms, limit) {
                    serde_json::to_writer(&mut out, &ev)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let s = Settings::load(file.as_deref())?;
            // The twin layer: the desired configuration kept in the data directory.
            let kept = twin::load_kept(&s.module.data_dir);
            let r = twin::check_report(&s, kept);
            println!("{}", serde_json::to_string_pretty(&r.report)?);
            for e in &r.errors {
                eprintln!(
                    "{:?} {}: {} (in force: {})",
                    e.error_type, e.configuration_name, e.message, e.used_configuration
                );
            }
            if let Some(e) = &r.kept_error {
                eprintln!("W-TWIN-KEPT {e}: the configuration shown is without it");
            }
            Ok(if r.errors.is_empty() && r.kept_error.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Validate { file } => {
            let stdout = std::io::stdout().lock();
            let (ok, bad) = match file.as_deref() {
                None => {
                    azureiotsecurity::validate::validate_lines(std::io::stdin().lock(), stdout)?
                }
                Some(p) if p.as_os_str() == "-" => {
                    azureiotsecurity::validate::validate_lines(std::io::stdin().lock(), stdout)?
                }
                Some(p) => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    azureiotsecurity::validate::validate_lines(BufReader::new(f), stdout)?
                }
            };
            tracing::debug!(ok, bad, "validated");
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Replay {
            config,
            messages,
            agent_id,
            file,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let mode = if messages {
                app::Mode::Messages { agent_id }
            } else {
                app::Mode::Events
            };
            let stdout = std::io::stdout().lock();
            let out = std::io::BufWriter::new(stdout);
            let stats = match file.as_deref() {
                None => app::replay(&settings, std::io::stdin().lock(), out, mode)?,
                Some(p) if p.as_os_str() == "-" => {
                    app::replay(&settings, std::io::stdin().lock(), out, mode)?
                }
                Some(p) => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    app::replay(&settings, BufReader::with_capacity(1 << 20, f), out, mode)?
                }
            };
            tracing::debug!(?stats, "replay finished");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            events,
            print,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let identity = if events || print {
                None
            } else {
                Identity::from_env(&identity::process_env())
                    .context("reading the module identity from the environment")?
            };
            let mode = if events {
                app::Mode::Events
            } else {
                let dir = &settings.module.data_dir;
                // A data directory that cannot be written (read-only, full) must not stop
                // the module: it runs with an AgentId of this run and says so.
                let agent_id = match azureiotsecurity::agent_id::load_or_create(dir) {
                    Ok(id) => id,
                    Err(e) => {
                        let id = uuid::Uuid::new_v4();
                        tracing::error!(error_id = "E-DATADIR", error = %e, agent_id = %id, "cannot keep the AgentId in the data directory: using one for this run only");
                        id
                    }
                };
                match identity {
                    Some(identity) => {
                        tracing::info!(
                            device = identity.device_id(),
                            module = identity.module_id().unwrap_or("-"),
                            endpoint = %identity.endpoint(),
                            "sending security messages over AMQP"
                        );
                        app::Mode::Send {
                            agent_id,
                            credentials: Arc::new(Credentials::new(identity)),
                            amqp: azureiotsecurity::config::stages::amqp(&settings.edgehub),
                            grace: Duration::from_millis(settings.edgehub.shutdown_grace_ms),
                        }
                    }
                    None => {
                        tracing::info!(
                            "no IoT Edge identity in the environment: printing the messages"
                        );
                        app::Mode::Messages { agent_id }
                    }
                }
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            // stdout has a thread of its own: a reader that does not read blocks it, not the
            // pipeline (which must keep honouring a stop).
            let printer = app::Printer::start(std::io::stdout(), PRINT_QUEUE_BYTES)
                .context("starting the stdout thread")?;
            let out = printer.clone();
            rt.block_on(async move {
                let shutdown = Arc::new(tokio::sync::Notify::new());
                let sd = shutdown.clone();
                tokio::spawn(async move { signals(sd).await });
                app::run(settings, shutdown, mode, out).await
            })?;
            let (lines, bytes) = printer.pending();
            if lines > 0 {
                tracing::warn!(
                    error_id = "W-STDOUT-BLOCKED",
                    lines,
                    bytes,
                    "stopping with output not printed: stdout was not read; it is lost"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Printed output held for a stdout that is not read, at most.
const PRINT_QUEUE_BYTES: usize = 4 << 20;

/// SIGTERM (IoT Edge's stop), SIGINT (Ctrl-C) and SIGHUP (a closed terminal) stop the
/// module: `shutdown` is notified and the run flushes what is in flight. A SIGINT once the
/// stop is under way exits at once (status 130), leaving what is not yet committed; the
/// others are ignored then.
async fn signals(shutdown: Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Not expected on Linux; Ctrl-C alone still stops the module.
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "SIGINT", "stopping: flushing what is in flight");
        shutdown.notify_one();
        return;
    };
    let mut stopping = false;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        if !stopping {
            stopping = true;
            tracing::info!(signal = name, "stopping: flushing what is in flight");
            shutdown.notify_one();
        } else if name == "SIGINT" {
            tracing::warn!(
                error_id = "W-STOP-FORCED",
                "second SIGINT: exiting at once; what is not yet in the outbox is lost"
            );
            std::process::exit(130);
        } else {
            tracing::info!(signal = name, "already stopping");
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The machine name of the running kernel (`uname -m`), from the uname syscall: the module's
/// image is a scratch image without a `uname` program.
fn uname_machine() -> Result<String> {
    let uts = rustix::system::uname();
    let machine = uts
        .machine()
        .to_str()
        .context("uname: machine name not UTF-8")?;
    Ok(machine.to_string())
}

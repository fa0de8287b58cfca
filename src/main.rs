//! The `azureiotsecurity` command line.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use azureiotsecurity::rules;

#[derive(Parser)]
#[command(version, about = "Defender for IoT security module: auditd stream to security messages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the audit rules the module needs (auditctl -R format).
    Rules {
        /// Architecture (uname -m form: x86_64, i686, aarch64, armv7l); default: this machine's.
        #[arg(long)]
        arch: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("azureiotsecurity: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Rules { arch } => {
            let machine = match arch {
                Some(a) => a,
                None => uname_machine().context("reading the machine architecture")?,
            };
            let Some(arch) = rules::Arch::from_uname(&machine) else {
                bail!("unsupported architecture {machine:?} (x86_64, i386/i686, aarch64, arm* are)");
            };
            print!("{}", rules::render(arch));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn uname_machine() -> Result<String> {
    let out = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .context("running uname -m")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

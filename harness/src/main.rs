use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vmbench::{bench, boot, exitcode};

/// vmbench: a reproducible virtual test-bed and benchmark harness.
#[derive(Parser)]
#[command(name = "vmbench", version, about)]
struct Cli {
    /// On errors, print the full error chain (with a backtrace when RUST_BACKTRACE=1).
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: run every case of a scenario, write results.json, print a summary.
    Bench(bench::Args),
    /// Boot one guest and run one workload in it.
    Boot(boot::Args),
    /// Build or show guest images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build (or reuse from the cache) an image: `probe`.
    Build {
        #[arg(default_value = "probe")]
        name: String,
    },
    /// Show an image's manifest.
    Show {
        #[arg(default_value = "probe")]
        name: String,
    },
}

fn images(cmd: ImagesCommand) -> anyhow::Result<()> {
    let name = match &cmd {
        ImagesCommand::Build { name } | ImagesCommand::Show { name } => name.clone(),
    };
    if name != "probe" {
        anyhow::bail!("unknown image '{name}': the images vmbench builds are: probe");
    }
    let m = images::probe::build(&mut |msg| eprintln!("{msg}"))?;
    match cmd {
        ImagesCommand::Build { .. } => {
            for a in &m.artifacts {
                println!("{}  {}  {}", a.sha256, a.bytes, a.path.display());
            }
        }
        ImagesCommand::Show { .. } => println!("{}", serde_json::to_string_pretty(&m)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Boot(args) => boot::run(args),
        Command::Images { command } => images(command),
    };
    match result {
        Ok(()) => ExitCode::from(exitcode::OK as u8),
        Err(e) => {
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(exitcode::for_error(&e) as u8)
        }
    }
}

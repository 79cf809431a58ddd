use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vmbench::cli::{bench, boot};
use vmbench::{exitcode, gate, merge};

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
    /// Compare a run against a baseline and fail on regressions (docs/ci.md).
    Gate(gate::Args),
    /// Merge the results of shards (`bench --shard I/N`) into one results.json.
    Merge(merge::Args),
    /// One repetition of one case as JSON: the interface `bench --ab` drives another build
    /// through (docs/ci.md).
    #[command(hide = true)]
    RunOne(bench::RunOneArgs),
    /// The versions of the interfaces this build speaks, as JSON.
    #[command(hide = true)]
    Protocol,
    /// Boot one guest and run one workload in it.
    Boot(boot::Args),
    /// Render report.html, PNGs and summary.md from results files (or a static site).
    Report(reports::cli::Args),
    /// Build or show guest images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build (or reuse from the cache) an image: `probe`, `linux` or a recipe in
    /// images/recipes/.
    Build {
        #[arg(default_value = "probe")]
        name: String,
    },
    /// List the images vmbench builds, with their descriptions and whether they are built.
    List,
    /// Show an image's manifest (building it first if needed).
    Show {
        #[arg(default_value = "probe")]
        name: String,
    },
    /// Lock the Debian packages of the `linux` image at the mirror's current versions
    /// (rewrites images/linux.lock).
    Lock {
        /// The only image with a lock.
        #[arg(value_parser = ["linux"])]
        name: String,
        /// The kernel package, Debian's generic flavour (default: the lock's kernel, else
        /// what linux-image-amd64 depends on).
        #[arg(long)]
        kernel: Option<String>,
    },
}

fn images(cmd: ImagesCommand) -> anyhow::Result<()> {
    let mut progress = |msg: &str| eprintln!("{msg}");
    match cmd {
        ImagesCommand::Build { name } => {
            for a in &images::build(&name, &mut progress)?.artifacts {
                println!("{}  {}  {}", a.sha256, a.bytes, a.path.display());
            }
        }
        ImagesCommand::Show { name } => {
            let m = images::build(&name, &mut progress)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        ImagesCommand::Lock { name: _, kernel } => {
            let opts = images::linux::Options::default();
            let lock = images::linux::lock(&opts, kernel.as_deref(), &mut progress)?;
            for p in &lock.packages {
                println!("{} {} {} {}", p.name, p.version, p.arch, p.sha256);
            }
            eprintln!("wrote {}", opts.lock.display());
        }
        ImagesCommand::List => {
            let entries = images::list()?;
            let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
            for e in entries {
                let status = match &e.status {
                    images::Status::Built(_) => "built".to_string(),
                    images::Status::NotBuilt => "not built".to_string(),
                    images::Status::Broken(why) => format!("broken: {why}"),
                };
                println!("{:width$}  {:9}  {}", e.name, status, e.description);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Gate(args) => gate::run(args),
        Command::Merge(args) => merge::run(args),
        Command::RunOne(args) => bench::run_one(args),
        Command::Protocol => bench::protocol(),
        Command::Boot(args) => boot::run(args),
        Command::Report(args) => reports::cli::run(args),
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

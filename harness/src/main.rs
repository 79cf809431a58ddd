use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use vmbench::cli::{bench, boot, Cli, Command, ImagesCommand};
use vmbench::{exitcode, gate, merge};

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

/// A command line clap refuses: one line and exit 2; help and the version
/// print as clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            // clap's message is its first paragraph (a list of missing arguments goes on
            // the following lines); the usage and tips after it are left to --help.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}; see --help", message.join(" "));
            ExitCode::from(exitcode::UNUSABLE as u8)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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

//! The CLI's commands (`bench`, `boot`, ...) and what they share: turning flags into the shared
//! device kinds, checking numbers where they are parsed (`num`). The command-line grammar
//! ([`Cli`]) lives here, not in main.rs, so that tests can walk every flag of every command.

pub mod bench;
pub mod boot;
pub mod num;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::{gate, merge};

use crate::scenario::{or_none, DeviceKind};

/// A flag that takes a device kind's name or `none` (`--nic e1000|virtio|none`), with the
/// same names as scenario files.
pub fn kind_or_none<K: DeviceKind + Send + Sync>() -> impl TypedValueParser<Value = Option<K>> {
    let mut names = K::NAMES.to_vec();
    names.push(or_none::NONE);
    PossibleValuesParser::new(names).map(|s| or_none::parse::<K>(&s).flatten())
}

/// vmbench: a reproducible virtual test-bed and benchmark harness.
#[derive(Parser)]
#[command(name = "vmbench", version, about)]
pub struct Cli {
    /// On errors, print the full error chain (with a backtrace when RUST_BACKTRACE=1).
    #[arg(long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum ImagesCommand {
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

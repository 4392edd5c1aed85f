//! `cargo xtask setup | build | test | bench | soak | demo | fuzz | man`: everything a fresh machine needs,
//! with no step done by hand.
mod build;
mod fuzz;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, set up, test and demo handshake-trace")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (root, Debian-like; idempotent).
    Setup,
    /// Build the kernel programs and target/release/handshake-trace with them embedded.
    Build,
    /// Setup, build, unit tests, then the root integration tests in tests/.
    Test {
        /// Only tests whose name contains this (passed to the test harness).
        filter: Option<String>,
    },
    /// Setup, build, then the overhead benchmark: writes docs/performance.md and docs/performance.json.
    Bench,
    /// Setup, build, then the agent's soak run (a million handshakes, ~10 % abnormal, RSS
    /// sampled): writes docs/soak.md and docs/soak.json. SOAK_HANDSHAKES changes the count.
    Soak,
    /// Setup, build, then run the lab demo (connect_timeout on both server styles, traced live).
    Demo {
        /// Extra arguments for `handshake-trace lab`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The libFuzzer targets in fuzz/ (MySQL decoder, redactor, trace reader), each for
    /// a bounded time from corpora seeded with the trace fixtures (installs cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Regenerate the man pages in docs/man/ from the CLI's definition (a unit test
    /// fails while they differ).
    Man,
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Run a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// A cargo command using the same toolchain that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Makes a root test that cannot run (not root, no kernel object, no binary, no MariaDB)
/// fail instead of printing `SKIPPED` and passing: set for both test runs of `xtask test`.
const REQUIRE_ROOT: &str = "HANDSHAKE_TRACE_REQUIRE_ROOT";

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f()?;
    eprintln!("xtask: {what} took {:.1} s", start.elapsed().as_secs_f64());
    Ok(out)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => timed("setup", setup::setup).map(drop),
        Cmd::Build => {
            let toolchain = timed("setup", setup::setup)?;
            build::build_all(&toolchain).map(drop)
        }
        Cmd::Test { filter } => {
            let toolchain = timed("setup", setup::setup)?;
            let obj = build::build_all(&toolchain)?;
            timed("unit tests", || {
                run(cargo()
                    .args(["test", "--locked", "--workspace", "--exclude", "handshake-trace-tests"])
                    .env("HANDSHAKE_TRACE_EBPF_OBJ", &obj)
                    .env(REQUIRE_ROOT, "1"))
            })?;
            timed("root integration tests", || {
                let mut cmd = cargo();
                cmd.args(["test", "--locked", "-p", "handshake-trace-tests", "--", "--test-threads=1"])
                    .env("HANDSHAKE_TRACE_BIN", root().join("target/release/handshake-trace"))
                    .env(REQUIRE_ROOT, "1");
                if let Some(f) = &filter {
                    cmd.arg(f);
                }
                run(&mut cmd)
            })
        }
        Cmd::Bench => {
            let toolchain = timed("setup", setup::setup)?;
            let obj = build::build_all(&toolchain)?;
            timed("benchmark", || {
                // The object embedded in the bench too: it attaches the empty programs itself.
                run(cargo()
                    .args(["run", "--locked", "--release", "-p", "handshake-trace-tests", "--bin", "handshake-trace-bench"])
                    .env("HANDSHAKE_TRACE_EBPF_OBJ", &obj)
                    .env("HANDSHAKE_TRACE_BIN", root().join("target/release/handshake-trace")))
            })
        }
        Cmd::Soak => {
            let toolchain = timed("setup", setup::setup)?;
            build::build_all(&toolchain)?;
            timed("soak", || {
                run(cargo()
                    .args(["run", "--locked", "--release", "-p", "handshake-trace-tests", "--bin", "handshake-trace-soak"])
                    .env("HANDSHAKE_TRACE_BIN", root().join("target/release/handshake-trace")))
            })
        }
        Cmd::Demo { args } => {
            let toolchain = timed("setup", setup::setup)?;
            build::build_all(&toolchain)?;
            run(Command::new(root().join("target/release/handshake-trace")).arg("lab").args(args))
        }
        Cmd::Fuzz { seconds } => timed("fuzz", || fuzz::fuzz(seconds)),
        Cmd::Man => run(cargo().args(["run", "--locked", "-q", "-p", "handshake-trace-cli", "--", "man-pages", "docs/man"])),
    }
}

//! Installing the build and test dependencies: Debian's rustc-web with its prebuilt
//! BPF `core` plus bpf-linker on LLVM 22, or, where a rustup nightly with rust-src
//! exists, the standard aya path. MariaDB server and client for the tests.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run;

/// How the kernel programs get compiled on this machine.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// Debian's /usr/bin/rustc with a prebuilt `core` for bpfel-unknown-none.
    Debian { bpf_linker: PathBuf },
    /// rustup nightly with rust-src: `-Z build-std=core`.
    Nightly { bpf_linker: PathBuf },
}

const DEBIAN_BPF_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf", "llvm-22-dev"];
/// MariaDB and real clients (the CLI, PyMySQL for Debian's python3), openssl for the
/// TLS test's certificate, bpftool to check programs are detached, Prometheus (and
/// promtool) to scrape the agent and check the alert rules, systemd-analyze and a
/// Python venv for the deploy/ checks; for the bench, sysbench (libmariadb clients) and the
/// peers it measures, tcpdump and strace; iptables (its legacy backend drops packets on
/// loopback) for the greeting-loss test; for the kernel-matrix test (Debian's 6.1 and
/// Ubuntu's 5.15 kernels under qemu), qemu, curl to download Ubuntu's kernel, a static
/// busybox and cpio to build its initramfs; tmux to run
/// `watch` in an 80-column terminal; haproxy for a load balancer's health checks.
const TEST_PACKAGES: &[&str] = &[
    "mariadb-server",
    "mariadb-client",
    "python3-pymysql",
    "openssl",
    "bpftool",
    "prometheus",
    "systemd",
    "python3-venv",
    "sysbench",
    "tcpdump",
    "strace",
    "iptables",
    "qemu-system-x86",
    "curl",
    "busybox-static",
    "cpio",
    "tmux",
    "haproxy",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn is_debian_like() -> bool {
    Path::new("/etc/debian_version").exists() && Path::new("/usr/bin/apt-get").exists()
}

fn manual_instructions() -> String {
    format!(
        "install by hand, then run `cargo xtask build`:\n  \
         - a Rust toolchain able to build for bpfel-unknown-none: rustup nightly with the rust-src \
         component, or Debian's {}\n  \
         - bpf-linker {BPF_LINKER_VERSION} (cargo install bpf-linker)\n  \
         - for the tests: MariaDB server and client, bpftool, tmux; for the bench: sysbench, tcpdump, strace",
        DEBIAN_BPF_PACKAGES.join(" ")
    )
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")))
        .unwrap_or(false)
}

pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"))
}

/// bpf-linker of the pinned version, installed into cargo's bin directory when missing.
fn ensure_bpf_linker(for_debian_llvm: bool) -> Result<PathBuf> {
    let path = cargo_home().join("bin/bpf-linker");
    let current = Command::new(&path)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if current.contains(BPF_LINKER_VERSION) {
        return Ok(path);
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    let mut cmd = crate::cargo();
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--force"]);
    if for_debian_llvm {
        // Link against Debian's LLVM 22: its llvm-config must come first on PATH.
        let path_env = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        cmd.args(["--no-default-features", "--features", "llvm-22"]).env("PATH", path_env);
    }
    run(&mut cmd)?;
    Ok(path)
}

/// Install what is missing and say which toolchain builds the kernel programs.
pub fn setup() -> Result<Toolchain> {
    if !is_root() {
        bail!(
            "setup installs system packages and the tests load BPF programs: run as root \
             (e.g. sudo -E cargo xtask test). Or {}",
            manual_instructions()
        );
    }
    if !is_debian_like() {
        bail!("this is not a Debian-like system (no apt-get); {}", manual_instructions());
    }
    apt_install(TEST_PACKAGES)?;
    if nightly_has_rust_src() {
        eprintln!("xtask: rustup nightly with rust-src found: using the standard aya build");
        return Ok(Toolchain::Nightly { bpf_linker: ensure_bpf_linker(false)? });
    }
    apt_install(DEBIAN_BPF_PACKAGES)?;
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").is_dir() {
        bail!("libstd-rust-web-dev-bpf is installed but /usr/lib/rustlib/bpfel-unknown-none/lib is missing");
    }
    let bpf_linker = ensure_bpf_linker(true).context("install bpf-linker")?;
    Ok(Toolchain::Debian { bpf_linker })
}

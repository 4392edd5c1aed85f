//! Building the kernel programs (always release) and the collector with them embedded.
use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::Result;

use crate::{cargo, root, run, setup::Toolchain};

/// Crates allowed to use unstable features under Debian's stable rustc.
const BOOTSTRAP_CRATES: &str =
    // `handshake_trace` is the eBPF binary's crate name (its atomic add needs an intrinsic).
    "aya_ebpf,aya_ebpf_bindings,aya_log_ebpf,handshake_trace_ebpf,handshake_trace,handshake_trace_common";

/// Build the eBPF object; returns its path.
pub fn build_ebpf(toolchain: &Toolchain) -> Result<PathBuf> {
    let dir = root().join("handshake-trace-ebpf");
    let target_dir = root().join("target/ebpf");
    let mut cmd = match toolchain {
        Toolchain::Debian { bpf_linker } => {
            let mut c = Command::new("/usr/bin/cargo");
            // Debian's rustc, not a rustup proxy; RUSTC_BOOTSTRAP names crates (not `1`)
            // so nothing asks for -Z build-std, which needs the absent rust-src.
            c.env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", BOOTSTRAP_CRATES)
                .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", bpf_linker);
            c
        }
        Toolchain::Nightly { bpf_linker } => {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo"])
                .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", bpf_linker);
            c
        }
    };
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTUP_TOOLCHAIN", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(&dir)
        .args(["build", "--locked", "--release", "--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target_dir);
    if matches!(toolchain, Toolchain::Nightly { .. }) {
        cmd.args(["-Z", "build-std=core"]);
    }
    run(&mut cmd)?;
    Ok(target_dir.join("bpfel-unknown-none/release/handshake-trace"))
}

/// Build everything; returns the eBPF object's path.
pub fn build_all(toolchain: &Toolchain) -> Result<PathBuf> {
    let t = Instant::now();
    let obj = build_ebpf(toolchain)?;
    eprintln!("xtask: eBPF build took {:.1} s ({} bytes)", t.elapsed().as_secs_f64(), std::fs::metadata(&obj)?.len());
    let t = Instant::now();
    run(cargo()
        .args(["build", "--locked", "--release", "-p", "handshake-trace-cli"])
        .env("HANDSHAKE_TRACE_EBPF_OBJ", &obj))?;
    let bin = root().join("target/release/handshake-trace");
    eprintln!(
        "xtask: userspace build took {:.1} s; {} is {} bytes",
        t.elapsed().as_secs_f64(),
        bin.display(),
        std::fs::metadata(&bin)?.len()
    );
    Ok(obj)
}

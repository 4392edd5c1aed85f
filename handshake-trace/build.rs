//! Embeds the kernel programs. `cargo xtask build` compiles them and passes the
//! object's path in `HANDSHAKE_TRACE_EBPF_OBJ`; a plain `cargo build` (no BPF
//! toolchain needed) embeds an empty stub instead, and the binary says so at run time.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=HANDSHAKE_TRACE_EBPF_OBJ");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("handshake-trace.bpf.o");
    match env::var_os("HANDSHAKE_TRACE_EBPF_OBJ") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::copy(&path, &out).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
        _ => {
            println!("cargo:warning=HANDSHAKE_TRACE_EBPF_OBJ not set: embedding an empty eBPF stub (use `cargo xtask build`)");
            fs::write(&out, b"").expect("write stub");
        }
    }
}

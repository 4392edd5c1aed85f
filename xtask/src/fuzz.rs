//! `cargo xtask fuzz`: the libFuzzer targets in fuzz/ (decoder, redactor, trace_reader),
//! each run for a bounded time from a corpus seeded with the trace fixtures.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{root, run, setup::cargo_home};

/// The targets, each with its invariants in fuzz/fuzz_targets/<name>.rs.
pub const TARGETS: [&str; 3] = ["decoder", "redactor", "trace_reader"];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz from crates.io when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new(cargo_home().join("bin/cargo-fuzz")).arg("--version").output();
    if have.is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(crate::cargo().args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
}

/// cargo fuzz needs nightly flags (-Z sanitizer): the stable toolchain takes them with
/// RUSTC_BOOTSTRAP=1 (only for this crate, outside the workspace).
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = crate::cargo();
    cmd.current_dir(root().join("fuzz")).arg("fuzz").args(args).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// The fixtures' trace files: whole for the reader; their kernel records, each after a
/// 2-byte little-endian length (fuzz/src/lib.rs), for the decoder and the redactor.
fn seed(corpus: &Path) -> Result<()> {
    let fixtures = root().join("handshake-trace/tests/fixtures");
    for entry in fs::read_dir(&fixtures).with_context(|| format!("read {}", fixtures.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "htrace") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(&path)?;
        let records: Vec<Vec<u8>> = text.lines().filter_map(event_record).collect();
        for target in TARGETS {
            fs::create_dir_all(corpus.join(target))?;
        }
        fs::copy(&path, corpus.join("trace_reader").join(&name))?;
        // The whole session, and windows of 8 records (small inputs run fast).
        let mut inputs = vec![(format!("{name}.all"), length_prefixed(&records))];
        for (i, w) in records.chunks(8).enumerate() {
            inputs.push((format!("{name}.{i}"), length_prefixed(w)));
        }
        for (file, bytes) in inputs {
            fs::write(corpus.join("decoder").join(&file), &bytes)?;
            fs::write(corpus.join("redactor").join(&file), &bytes)?;
        }
    }
    Ok(())
}

/// The bytes of a `{"t":"ev","b":"<hex>"}` line.
fn event_record(line: &str) -> Option<Vec<u8>> {
    let hex = line.strip_prefix(r#"{"t":"ev","b":""#)?.strip_suffix(r#""}"#)?;
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn length_prefixed(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let n = r.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&r[..n]);
    }
    out
}

/// Build the targets, seed their corpora, run each for `seconds`.
pub fn fuzz(seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let corpus = root().join("fuzz/corpus");
    seed(&corpus)?;
    run(&mut cargo_fuzz(&["build", "-O"]))?;
    let mut failed = Vec::new();
    for target in TARGETS {
        let dir = corpus.join(target);
        let artifacts = format!("{}/", root().join("fuzz/artifacts").join(target).display());
        fs::create_dir_all(&artifacts)?;
        let limits = [
            format!("-max_total_time={seconds}"),
            "-max_len=4096".into(),
            // Bounded memory is one of the invariants: past these, libFuzzer reports a crash.
            "-rss_limit_mb=1024".into(),
            "-malloc_limit_mb=512".into(),
            "-timeout=10".into(),
            format!("-artifact_prefix={artifacts}"),
        ];
        let mut args = vec!["run", "-O", target, dir.to_str().unwrap(), "--"];
        args.extend(limits.iter().map(String::as_str));
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        if let Err(e) = run(&mut cargo_fuzz(&args)) {
            eprintln!("xtask: {target}: {e:#} (the input is in {artifacts})");
            failed.push(target);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_become_length_prefixed_records() {
        assert_eq!(event_record(r#"{"t":"ev","b":"01ff"}"#), Some(vec![1, 0xff]));
        assert_eq!(event_record(r#"{"t":"addrs","server":null}"#), None);
        assert_eq!(event_record(r#"{"t":"ev","b":"0g"}"#), None);
        assert_eq!(length_prefixed(&[vec![7], vec![]]), vec![1, 0, 7, 0, 0]);
    }
}

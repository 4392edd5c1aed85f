//! `analyze` of each trace recorded from a real run (tests/fixtures/*.htrace) prints
//! exactly the stored output: text (`.txt`), JSON Lines (`.jsonl`) and the summary
//! (`.summary`). No root: the replay needs no kernel. Times are shown in UTC here.
use std::path::{Path, PathBuf};

use handshake_trace::{
    commands::{analyze, WatchOptions},
    output::summary::print_summary,
};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "htrace"))
        .collect();
    traces.sort();
    traces
}

fn replay(trace: &Path, json: bool) -> (String, String) {
    let t = analyze::read(trace).unwrap();
    let opts = WatchOptions { json, ..Default::default() };
    let (mut out, mut log) = (Vec::new(), Vec::new());
    let summary = analyze::analyze(&t, &opts, &mut out, &mut log).unwrap();
    print_summary(&summary, handshake_trace::output::summary::DEFAULT_TOP, &mut log).unwrap();
    (String::from_utf8(out).unwrap(), String::from_utf8(log).unwrap())
}

#[test]
fn every_fixture_replays_to_its_stored_output() {
    // The text output shows local times; the stored files were written in UTC.
    std::env::set_var("TZ", "UTC");
    let traces = fixtures();
    assert!(traces.len() >= 3, "the recorded fixtures are missing: {traces:?}");
    // HANDSHAKE_TRACE_BLESS=1 rewrites the stored outputs from this build (review the diff).
    let bless = std::env::var_os("HANDSHAKE_TRACE_BLESS").is_some();
    for trace in traces {
        if bless {
            let (text, log) = replay(&trace, false);
            let (json, _) = replay(&trace, true);
            for (ext, body) in [("txt", text), ("summary", log), ("jsonl", json)] {
                std::fs::write(trace.with_extension(ext), body).unwrap();
            }
        }
        let expected = |ext: &str| std::fs::read_to_string(trace.with_extension(ext)).unwrap();
        let (text, log) = replay(&trace, false);
        assert_eq!(text, expected("txt"), "text of {}", trace.display());
        assert_eq!(log, expected("summary"), "summary of {}", trace.display());
        let (json, _) = replay(&trace, true);
        assert_eq!(json, expected("jsonl"), "JSON of {}", trace.display());
    }
}

#[test]
fn the_fixtures_cover_both_timeout_mechanisms_and_the_common_failures() {
    let mut verdicts = Vec::new();
    let mut mechanisms = Vec::new();
    for trace in fixtures() {
        let (json, _) = replay(&trace, true);
        for line in json.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            verdicts.push(v["verdict"].as_str().unwrap().to_string());
            if let Some(m) = v["wait"]["mechanism"].as_str() {
                mechanisms.push(m.to_string());
            }
        }
    }
    for v in ["ok", "auth_failed", "server_error", "server_timeout", "client_reset"] {
        assert!(verdicts.iter().any(|x| x == v), "no {v} in {verdicts:?}");
    }
    for m in ["alarm_eintr", "poll"] {
        assert!(mechanisms.iter().any(|x| x == m), "no {m} in {mechanisms:?}");
    }
}

/// Secret bytes are zeroed (or '*') in the file.
fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0 || *b == b'*')
}

#[test]
fn recorded_files_hold_no_secrets() {
    use handshake_trace::{events::{decode, Event}, recording::format::TraceItem};
    let (mut greetings, mut logins) = (0, 0);
    for trace in fixtures() {
        let t = analyze::read(&trace).unwrap();
        assert!(t.header.redacted, "{}", trace.display());
        for item in &t.items {
            let TraceItem::Event(raw) = item else { continue };
            let Ok(Event::Io(io)) = decode(raw) else { continue };
            let p = &io.payload;
            if io.sys.kind.is_write() && p.len() > 40 && p[3] == 0 && p[4] == 10 {
                // Greeting: version NUL-terminated, 4-byte id, then 8 scramble bytes.
                let ve = 5 + p[5..].iter().position(|b| *b == 0).unwrap();
                assert!(blank(&p[ve + 5..ve + 13]), "scramble kept in {}: {p:?}", trace.display());
                greetings += 1;
            }
            // (MariaDB clients put extended capabilities in the filler's last 4 bytes.)
            if io.sys.kind.is_read() && p.len() > 40 && u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & 0x0200 != 0 && p[9..28].iter().all(|b| *b == 0) {
                // A login body: 32 fixed bytes, the user, then a length-prefixed auth response.
                let ue = 32 + p[32..].iter().position(|b| *b == 0).unwrap();
                let len = p[ue + 1] as usize;
                assert!(len > 0 && blank(&p[ue + 2..(ue + 2 + len).min(p.len())]), "auth response kept in {}: {p:?}", trace.display());
                logins += 1;
            }
        }
    }
    assert!(greetings >= 5 && logins >= 3, "checked {greetings} greetings and {logins} logins");
}

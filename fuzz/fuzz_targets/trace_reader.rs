//! The trace reader (recording/format), then the replay `analyze` does: any bytes give a
//! trace or an error, never a panic; memory stays bounded (`cargo xtask fuzz` runs it
//! under libFuzzer's -rss_limit_mb and -malloc_limit_mb).
#![no_main]
use handshake_trace::{correlate::Correlator, events, output, recording::format::{read_trace, TraceItem}, support::clock::Clock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = read_trace(data) else { return };
    let clock = Clock::with_offset(trace.header.clock_offset_ns);
    let mut correlator = Correlator::new(64);
    let mut done = Vec::new();
    for item in &trace.items {
        if let TraceItem::Event(raw) = item {
            if let Ok(ev) = events::decode(raw) {
                done.extend(correlator.push(&ev, None));
            }
        }
    }
    done.extend(correlator.finish_all(u64::MAX / 2));
    for h in &done {
        let _ = output::handshake_timeline(h, &clock);
    }
});

//! The MySQL decoder (protocol/) and everything after it: records decoded into events,
//! correlated, judged and rendered as text and JSON; each record's bytes also framed as
//! a MySQL stream and every packet decoded in both states. Invariant: no panic.
#![no_main]
use handshake_trace::{correlate::Correlator, events, output, protocol, support::clock::Clock};
use handshake_trace_fuzz::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let clock = Clock::with_offset(0);
    let mut correlator = Correlator::new(64);
    let mut done = Vec::new();
    let (mut client, mut server) = (protocol::PacketStream::new(), protocol::PacketStream::new());
    for (i, rec) in records(data).into_iter().enumerate() {
        if let Ok(ev) = events::decode(rec) {
            done.extend(correlator.push(&ev, None));
        }
        // The same bytes as a stream of packets, some of them cut (uncaptured bytes follow).
        let stream = if i % 2 == 0 { &mut client } else { &mut server };
        let total = rec.len() + usize::from(rec.first().copied().unwrap_or(0) & 0x0f);
        for p in stream.feed(rec, total) {
            for state in [false, true] {
                let _ = format!("{:?}", protocol::decode_client(&p, state));
                let _ = format!("{:?}", protocol::decode_server(&p, state));
            }
        }
    }
    done.extend(correlator.finish_all(u64::MAX / 2));
    for h in &done {
        let _ = output::handshake_timeline(h, &clock);
        let _ = output::handshake_json(h, &clock).to_string();
    }
});


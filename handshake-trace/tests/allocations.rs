//! Heap allocations of the live path, counted: the records of real recordings
//! (tests/fixtures/*.htrace) decoded and fed through the pipeline with the agent's metrics
//! sink, as the agent's drain does, over and over. A counting global allocator (per
//! thread, so other tests' threads do not count) gives allocations per record; the
//! budgets below fail the test when a change adds allocations to the hot path.
//! `cargo test -p handshake-trace --test allocations -- --nocapture` prints the figures.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    path::Path,
};

use handshake_trace::{
    commands::analyze,
    events::{decode, AcceptAddrs, Event},
    export::metrics::{Metrics, MetricsSink},
    output::printer::{PrintOptions, Printer},
    pipeline::{Pipeline, PipelineOptions, Sink},
    recording::format::TraceItem,
    support::clock::Clock,
};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Every record of the fixtures, with the addresses the live session gave each accept.
fn records() -> Vec<(Vec<u8>, AcceptAddrs)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for name in ["mariadb-mix.htrace", "lab-poll.htrace", "lab-alarm.htrace"] {
        let trace = analyze::read(&dir.join(name)).unwrap();
        let mut items = trace.items.iter().peekable();
        while let Some(item) = items.next() {
            if let TraceItem::Event(raw) = item {
                let addrs = match items.peek() {
                    Some(TraceItem::Addrs { server, client }) => AcceptAddrs { server: *server, client: *client },
                    _ => AcceptAddrs::default(),
                };
                out.push((raw.clone(), addrs));
            }
        }
    }
    out
}

/// The fixtures' timestamps moved by `by_ns` (each round a later stretch of time, so the
/// correlator sees new connections, not replays of old ones).
fn shifted(raw: &[u8], by_ns: u64) -> Vec<u8> {
    use handshake_trace_common::EventHeader;
    let at = std::mem::offset_of!(EventHeader, ts_ns);
    let mut r = raw.to_vec();
    if let Some(ts) = r.get_mut(at..at + 8) {
        let t = u64::from_ne_bytes(ts.try_into().unwrap()).wrapping_add(by_ns);
        ts.copy_from_slice(&t.to_ne_bytes());
    }
    r
}

#[test]
fn decoding_and_the_pipeline_stay_within_their_allocation_budgets() {
    let records = records();
    assert!(records.len() > 30, "the fixtures are missing");
    const ROUNDS: u64 = 500;
    let rounds: Vec<Vec<(Vec<u8>, AcceptAddrs)>> =
        (0..ROUNDS).map(|i| records.iter().map(|(r, a)| (shifted(r, i * 3_600_000_000_000), *a)).collect()).collect();
    let n = (records.len() as u64 * ROUNDS) as f64;

    let before = allocs();
    let mut io = 0u64;
    for (raw, _) in rounds.iter().flatten() {
        if let Ok(Event::Io(_)) = decode(raw) {
            io += 1;
        }
    }
    let decode_per_record = (allocs() - before) as f64 / n;

    let (metrics, _registry) = Metrics::new();
    let (pipeline_per_record, finished) = through(&rounds, MetricsSink::new(metrics));
    println!(
        "allocations: decode {decode_per_record:.2} per record ({io} reads/writes of {n} records); \
         decode + pipeline + metrics {pipeline_per_record:.2} per record, {:.1} per handshake ({finished} handshakes)",
        pipeline_per_record * n / finished.max(1) as f64
    );
    // `watch -j`: the same with the JSON printer instead of the metrics.
    let printer = Printer::new(PrintOptions { json: true, ..Default::default() }, Clock::with_offset(0), std::io::sink());
    let (json_per_record, _) = through(&rounds, printer);
    let json_per_handshake = (json_per_record - pipeline_per_record) * n / finished.max(1) as f64;
    println!("allocations: decode + pipeline + JSON printer {json_per_record:.2} per record, {json_per_handshake:.1} more per handshake than the metrics");
    // Budgets: decoding borrows nothing from the heap; the pipeline's allocations are
    // per handshake (its timeline, its packets' texts), not per record: the Vec of
    // finished handshakes, the streams' packet lists and the attributes' strings are
    // not allocated per event or per pair (2.2 per record before they were cut).
    assert_eq!(decode_per_record, 0.0, "decoding a record allocates");
    assert!(pipeline_per_record < 1.6, "{pipeline_per_record:.2} allocations per record through the pipeline");
    assert!(json_per_handshake < JSON_BUDGET, "{json_per_handshake:.1} allocations per handshake in the JSON printer");
}

/// Allocations of one handshake's JSON record (its time, reason and other strings, its
/// timeline's list, the attributes' map; 14.7 measured), beyond the pipeline's own.
const JSON_BUDGET: f64 = 16.0;

/// Every round through a batched pipeline with `sink`: (allocations per record, handshakes).
fn through(rounds: &[Vec<(Vec<u8>, AcceptAddrs)>], sink: impl Sink) -> (f64, u64) {
    let n = rounds.iter().map(Vec::len).sum::<usize>() as f64;
    let mut pipeline = Pipeline::new(PipelineOptions::default()).in_batches().with_sink(sink);
    let before = allocs();
    for round in rounds {
        for (raw, addrs) in round {
            if let Ok(ev) = decode(raw) {
                pipeline.push(&ev, *addrs).unwrap();
            }
        }
        pipeline.batch_end(false).unwrap();
    }
    let per_record = (allocs() - before) as f64 / n;
    let summary = pipeline.finish(u64::MAX / 2, Default::default()).unwrap();
    (per_record, summary.handshakes())
}

//! The trace-file format: round trips, the documented header, and clear errors for bad input.
use super::*;
use crate::events::{as_bytes, decode, Event};
use handshake_trace_common::{
    kind, sys, tcp, AcceptEvent, EventHeader, IoEvent, SignalEvent, SysEvent, TcpEvent, PAYLOAD_MAX,
};

fn header() -> TraceHeader {
    TraceHeader {
        tool_version: "0.1.0".into(),
        kernel: "6.1.0-37-amd64".into(),
        started: "2025-06-02T10:11:12.345678Z".into(),
        // Beyond i64 and beyond f64's exact integers: must survive as a string.
        clock_offset_ns: -18_446_744_073_709_551_615,
        targets: vec![
            TargetInfo { pid: 812, comm: "mariadbd".into(), exe: Some("/usr/sbin/mariadbd".into()) },
            TargetInfo { pid: 9001, comm: "my \"odd\" \\ name\n".into(), exe: None },
        ],
        ringbuf_bytes: 4 << 20,
        redacted: true,
        covers: None,
    }
}

fn h(kind: u32) -> EventHeader {
    EventHeader { kind, pid: 812, tid: 830, _pad: 0, ts_ns: 1_234_567_890_123 }
}

fn sys_event(syscall: u32) -> SysEvent {
    SysEvent { header: h(kind::SYSCALL), conn_gen: 77, ret: -11, duration_ns: 5, args: [1, 2, 3, u64::MAX], fd: 43, syscall }
}

/// One record of every kind, as the kernel sends them.
fn records() -> Vec<Vec<u8>> {
    let accept = AcceptEvent {
        header: h(kind::ACCEPT),
        listen_fd: 20,
        ret: 43,
        family: 2,
        port: 51234,
        by_family: 0,
        addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        conn_gen: 77,
    };
    let mut io = IoEvent { sys: sys_event(sys::RECVFROM), captured: 5, tracking_end: 0, payload: [0; PAYLOAD_MAX] };
    io.sys.header.kind = kind::IO;
    io.sys.ret = 5;
    io.payload[..5].copy_from_slice(&[1, 0, 0, 0, 0xff]);
    let signal = SignalEvent {
        header: h(kind::SIGNAL),
        conn_gen: 77,
        fd: 43,
        signal: 14,
        target_tid: 830,
        code: -6,
        result: 0,
        errno: 0,
        delivered: 1,
        _pad: 0,
    };
    let tcp = TcpEvent { header: h(kind::TCP), conn_gen: 77, fd: 43, what: tcp::STATE, oldstate: 1, newstate: 7 };
    vec![
        as_bytes(&accept),
        as_bytes(&sys_event(sys::POLL)),
        as_bytes(&io),
        as_bytes(&signal),
        as_bytes(&tcp),
        as_bytes(&h(kind::PROCESS_EXIT)),
    ]
}

fn end() -> TraceEnd {
    TraceEnd { ended: "2025-06-02T11:00:00Z".into(), emitted: u64::MAX, lost_ringbuf: 3, lost_mapfull: 0, undecodable: 1, stop_ns: 1_234_999_000_000 }
}

fn write_full() -> (Vec<u8>, Vec<TraceItem>) {
    let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
    let mut items = Vec::new();
    for (i, r) in records().into_iter().enumerate() {
        w.event(&r).unwrap();
        items.push(TraceItem::Event(r));
        if i == 0 {
            // After the accept: its addresses.
            let server = Some("10.0.0.5:3306".parse().unwrap());
            w.addrs(server, None).unwrap();
            items.push(TraceItem::Addrs { server, client: None });
        }
    }
    let v6: SocketAddr = "[::1]:3306".parse().unwrap();
    w.listener(812, 20, "127.0.0.1:3306".parse().unwrap()).unwrap();
    w.listener(812, -1, v6).unwrap();
    w.exit(812, u64::MAX).unwrap();
    items.push(TraceItem::Listener { pid: 812, fd: 20, addr: "127.0.0.1:3306".parse().unwrap() });
    items.push(TraceItem::Listener { pid: 812, fd: -1, addr: v6 });
    items.push(TraceItem::Exit { pid: 812, ts_ns: u64::MAX });
    items.push(TraceItem::End(end()));
    (w.end(&end()).unwrap(), items)
}

fn read(bytes: &[u8]) -> Result<Trace, TraceError> {
    read_trace(bytes)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec()).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn round_trip() {
    let (bytes, items) = write_full();
    let t = read(&bytes).unwrap();
    assert_eq!(t.header, header());
    assert_eq!(t.items, items);
    assert!(!t.truncated);
    assert_eq!(t.end(), Some(&end()));
    // The records still decode to the same events.
    let events = t.items.iter().filter(|i| matches!(i, TraceItem::Event(_)));
    for (item, raw) in events.zip(records()) {
        let TraceItem::Event(b) = item else { panic!("{item:?}") };
        assert_eq!(decode(b).unwrap(), decode(&raw).unwrap());
    }
    assert!(matches!(decode(&records()[5]).unwrap(), Event::ProcessExit { pid: 812, .. }));
}

#[test]
fn header_line_is_as_documented() {
    let (bytes, _) = write_full();
    let first = &lines(&bytes)[0];
    assert!(first.starts_with(r#"{"format":"handshake-trace","version":1,"tool_version":"0.1.0","kernel":"6.1.0-37-amd64","#), "{first}");
    assert!(first.contains(r#""clock_offset_ns":"-18446744073709551615""#), "{first}");
    assert!(first.contains(r#"{"pid":9001,"comm":"my \"odd\" \\ name\n","exe":null}"#), "{first}");
    assert!(first.ends_with(r#""ringbuf_bytes":4194304,"redacted":true}"#), "{first}");
    let all = lines(&bytes);
    assert!(all[1].starts_with(r#"{"t":"ev","b":"01000000"#), "{}", all[1]);
    assert_eq!(all[2], r#"{"t":"addrs","server":"10.0.0.5:3306","client":null}"#);
    assert_eq!(all[8], r#"{"t":"listener","pid":812,"fd":20,"addr":"127.0.0.1:3306"}"#);
    assert_eq!(all[9], r#"{"t":"listener","pid":812,"fd":-1,"addr":"[::1]:3306"}"#);
    assert_eq!(all[10], r#"{"t":"exit","pid":812,"ts_ns":18446744073709551615}"#);
    assert_eq!(
        all[11],
        r#"{"t":"end","ended":"2025-06-02T11:00:00Z","emitted":18446744073709551615,"lost_ringbuf":3,"lost_mapfull":0,"undecodable":1,"stop_ns":1234999000000}"#
    );
    assert_eq!(all.len(), 12);
}

#[test]
fn missing_trailer_is_truncated_not_an_error() {
    let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
    w.event(&records()[0]).unwrap();
    w.exit(1, 2).unwrap();
    // Dropped without end(): the recorder was killed.
    let bytes = std::mem::take(&mut w.out);
    let t = read(&bytes).unwrap();
    assert!(t.truncated);
    assert_eq!(t.items, vec![TraceItem::Event(records()[0].clone()), TraceItem::Exit { pid: 1, ts_ns: 2 }]);
    assert_eq!(t.end(), None);

    // Header only.
    let w = TraceWriter::new(Vec::new(), &header()).unwrap();
    let t = read(&w.out).unwrap();
    assert!(t.truncated && t.items.is_empty());

    // Killed in the middle of writing a line: the partial last line is dropped.
    let mut cut = bytes.clone();
    let full = lines(&bytes)[1].clone();
    cut.extend_from_slice(&full.as_bytes()[..40]);
    let t = read(&cut).unwrap();
    assert!(t.truncated);
    assert_eq!(t.items.len(), 2);
}

fn error_of(text: &str) -> TraceError {
    match read(text.as_bytes()) {
        Err(e) => e,
        Ok(t) => panic!("read: {t:?}"),
    }
}

fn with_lines(extra: &[&str]) -> String {
    let w = TraceWriter::new(Vec::new(), &header()).unwrap();
    let mut s = String::from_utf8(w.out).unwrap();
    for l in extra {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[test]
fn wrong_first_line_is_rejected() {
    let e = error_of("{\"t\":\"ev\",\"b\":\"00\"}\n");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("not a handshake-trace trace"), "{e}");
    let e = error_of("hello\n");
    assert_eq!(e.line, 1);
    assert!(e.to_string().starts_with("line 1: not a handshake-trace trace"), "{e}");
    let e = error_of("");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("empty file"), "{e}");
    let e = error_of("[1,2]\n");
    assert_eq!(e.line, 1);
    // A header missing a field.
    let e = error_of(r#"{"format":"handshake-trace","version":1}"#);
    assert_eq!(e.line, 1);
    assert!(e.message.contains("clock_offset_ns"), "{e}");
}

/// A crafted header's clock offset beyond what a wall clock minus a monotonic clock can
/// be (both u64 ns) is refused with the field named, not wrapped into a wrong time.
#[test]
fn a_clock_offset_out_of_range_is_refused() {
    for bad in ["-170141183460469231731687303715884105000", "18446744073709551616"] {
        let text = with_lines(&[]).replacen(r#""clock_offset_ns":"-18446744073709551615""#, &format!(r#""clock_offset_ns":"{bad}""#), 1);
        let Err(e) = read(text.as_bytes()) else { panic!("{bad} accepted") };
        assert_eq!(e.line, 1);
        assert!(e.message.contains("clock_offset_ns") && e.message.contains("out of range"), "{e}");
    }
}

#[test]
fn newer_version_is_rejected() {
    let text = with_lines(&[]).replacen(r#""version":1"#, r#""version":2"#, 1);
    let e = error_of(&text);
    assert_eq!(e.line, 1);
    assert!(e.message.contains("version 2 is newer"), "{e}");
    let text = with_lines(&[]).replacen(r#""version":1"#, r#""version":"1""#, 1);
    assert_eq!(error_of(&text).line, 1);
}

#[test]
fn malformed_lines_name_their_line() {
    let good = r#"{"t":"exit","pid":1,"ts_ns":2}"#;
    let e = error_of(&with_lines(&[good, r#"{"t":"ev","b":"0g"}"#]));
    assert_eq!(e.line, 3);
    assert!(e.message.contains("not hex"), "{e}");
    let e = error_of(&with_lines(&[r#"{"t":"ev","b":"abc"}"#]));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("odd number"), "{e}");
    let e = error_of(&with_lines(&[good, good, r#"{"t":"mystery"}"#]));
    assert_eq!(e.line, 4);
    assert!(e.message.contains("unknown record type"), "{e}");
    assert_eq!(e.to_string(), "line 4: unknown record type \"t\":\"mystery\"");
    let e = error_of(&with_lines(&[r#"{"pid":1}"#]));
    assert_eq!((e.line, e.message.contains("\"t\"")), (2, true));
    let e = error_of(&with_lines(&[good, "{not json"]));
    assert_eq!(e.line, 3);
    let e = error_of(&with_lines(&[r#"{"t":"listener","pid":1,"fd":3,"addr":"localhost"}"#]));
    assert_eq!(e.line, 2);
    let e = error_of(&with_lines(&[r#"{"t":"exit","pid":-1,"ts_ns":2}"#]));
    assert!(e.message.contains("pid"), "{e}");
    let e = error_of(&with_lines(&[r#"{"t":"exit","pid":4294967296,"ts_ns":2}"#]));
    assert!(e.message.contains("pid"), "{e}");
    let e = error_of(&with_lines(&[good, ""]));
    assert_eq!(e.line, 3);
    // Complete lines are never excused as a cut-short write.
    let e = error_of(&with_lines(&[r#"{"t":"ev","b":"0"#]));
    assert_eq!(e.line, 2);
    let e = error_of(&with_lines(&[r#"{"t":"addrs","server":"nowhere","client":null}"#]));
    assert!(e.message.contains("server"), "{e}");
    // Nothing may follow the trailer.
    let end = r#"{"t":"end","ended":"x","emitted":1,"lost_ringbuf":0,"lost_mapfull":0,"undecodable":0}"#;
    let e = error_of(&with_lines(&[end, good]));
    assert_eq!(e.line, 3);
    assert!(e.message.contains("after the trailer"), "{e}");
    let e = error_of(&with_lines(&[r#"{"t":"end","ended":"x"}"#]));
    assert!(e.message.contains("emitted"), "{e}");
}

#[test]
fn hex_is_read_in_either_case() {
    let t = read(with_lines(&[r#"{"t":"ev","b":"00aBCdEf19"}"#]).as_bytes()).unwrap();
    assert_eq!(t.items, vec![TraceItem::Event(vec![0x00, 0xab, 0xcd, 0xef, 0x19])]);
    assert!(t.truncated);
    assert_eq!(decode_hex(""), Ok(vec![]));
    assert!(decode_hex("é0").is_err());
}

#[test]
fn crlf_and_extra_fields_are_accepted() {
    let text = with_lines(&[r#"{"t":"exit","pid":1,"ts_ns":2,"note":"later versions may add fields"}"#]).replace('\n', "\r\n");
    let t = read(text.as_bytes()).unwrap();
    assert_eq!(t.items, vec![TraceItem::Exit { pid: 1, ts_ns: 2 }]);
    // Addresses may be absent; a trailer without stop_ns reads as 0 (unknown).
    let end = r#"{"t":"end","ended":"x","emitted":1,"lost_ringbuf":0,"lost_mapfull":0,"undecodable":0}"#;
    let t = read(with_lines(&[r#"{"t":"addrs","client":"[::1]:5"}"#, end]).as_bytes()).unwrap();
    assert_eq!(t.items[0], TraceItem::Addrs { server: None, client: Some("[::1]:5".parse().unwrap()) });
    assert_eq!(t.end().map(|e| e.stop_ns), Some(0));
    assert!(!t.truncated);
    // A numeric clock offset reads too.
    let text = with_lines(&[]).replacen(r#""clock_offset_ns":"-18446744073709551615""#, r#""clock_offset_ns":-5"#, 1);
    assert_eq!(read(text.as_bytes()).unwrap().header.clock_offset_ns, -5);
}

/// The writer streams: each call writes its whole line through and flushes it;
/// nothing is kept back.
#[test]
fn writer_writes_and_flushes_each_line() {
    #[derive(Default)]
    struct Counting {
        writes: Vec<usize>,
        flushes: usize,
    }
    impl Write for Counting {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.writes.push(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }
    let mut w = TraceWriter::new(Counting::default(), &header()).unwrap();
    assert_eq!((w.out.writes.len(), w.out.flushes), (1, 1));
    for r in records() {
        w.event(&r).unwrap();
    }
    assert_eq!((w.out.writes.len(), w.out.flushes), (7, 7));
    assert!(w.line.is_empty());
    let out = w.end(&end()).unwrap();
    assert_eq!(out.writes.len(), 8);
    assert!(out.flushes >= 8);
}

#[test]
fn an_endless_line_is_an_error_not_unbounded_memory() {
    // What /dev/zero looks like to a reader: bytes and no newline, forever.
    let endless = std::io::BufReader::new(std::io::repeat(0));
    let e = read_trace(endless).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.message.contains("longer than 1024 KiB"), "{e}");
}

#[test]
fn a_flight_files_window_and_cut_batches_round_trip() {
    let covers = Some(Window { from_ns: 1_000_000_000, to_ns: 1_420_000_000 });
    let mut w = TraceWriter::new(Vec::new(), &TraceHeader { covers, ..header() }).unwrap();
    w.drained(3, true).unwrap();
    w.drained(0, false).unwrap();
    let bytes = w.end(&end()).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.lines().next().unwrap().ends_with(r#","covers":{"from_ns":1000000000,"to_ns":1420000000,"seconds":0.420}}"#), "{text}");
    assert!(text.contains(r#"{"t":"drained","lost":3,"cut":true}"#) && text.contains(r#"{"t":"drained","lost":0}"#), "{text}");
    let t = read(&bytes).unwrap();
    assert_eq!(t.header.covers, covers);
    assert_eq!(t.header.covers.unwrap().seconds(), 0.42);
    assert_eq!(t.items[..2], [TraceItem::Drained { lost: 3, cut: true }, TraceItem::Drained { lost: 0, cut: false }]);
}

#[test]
fn trailing_zeros_left_out_of_a_line_come_back_and_are_bounded() {
    let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
    w.event_then_zeros(&[0xab, 0xcd], 3).unwrap();
    w.event_then_zeros(&[0x01], 0).unwrap();
    let bytes = w.end(&end()).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(r#"{"t":"ev","b":"abcd","z":3}"#) && text.contains(r#"{"t":"ev","b":"01"}"#), "{text}");
    let t = read(&bytes).unwrap();
    assert_eq!(t.items[..2], [TraceItem::Event(vec![0xab, 0xcd, 0, 0, 0]), TraceItem::Event(vec![1])]);
    // A crafted count does not make the reader allocate without bound.
    let e = error_of(&with_lines(&[r#"{"t":"ev","b":"00","z":1000000000000}"#]));
    assert!(e.message.contains("\"z\""), "{e}");
}

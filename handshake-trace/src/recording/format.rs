//! Trace files: what `handshake-trace record` saves and `handshake-trace analyze`
//! replays. Pure: std and serde_json only, no aya, no tokio.
//!
//! Format "handshake-trace trace, version 1": JSON Lines, UTF-8. The first line is
//! the header, then one object per line tagged by `"t"`:
//!
//! - `{"t":"ev","b":"<hex>"}`: a kernel record exactly as received (after redaction);
//!   `"z":N`: followed by N zero bytes left out of `b` (the flight recorder's files);
//! - `{"t":"addrs","server":"127.0.0.1:3306","client":null}`: right after an accept, the
//!   addresses the live session used for it (from /proc);
//! - `{"t":"listener","pid":P,"fd":F,"addr":"127.0.0.1:3306"}`: a listening socket's address from /proc;
//! - `{"t":"exit","pid":P,"ts_ns":T}`: a target exit noticed by the /proc rescan;
//! - `{"t":"drained","lost":N}`: the end of a batch of records (one drain of the ring
//!   buffer); the kernel lost N records during it, so its handshakes may miss events;
//!   `"cut":true` when the batch stopped at its bound before the ring was empty;
//! - `{"t":"end","ended":"..","emitted":N,"lost_ringbuf":N,"lost_mapfull":N,"undecodable":N,"stop_ns":T}`:
//!   the trailer (`stop_ns`: kernel monotonic time tracing stopped; 0 or absent: unknown).
//!
//! Lines are written and flushed one at a time. A file without the trailer was cut
//! short: it still reads, as `truncated`. See docs/trace-format.md.
use std::{
    fmt,
    io::{self, BufRead, Write},
    net::SocketAddr,
};

use serde_json::{Map, Value};

/// `"format"` of the header line.
pub const FORMAT: &str = "handshake-trace";
/// The version this module writes, and the newest it reads.
pub const VERSION: u64 = 1;
/// The most trailing zeros an `ev` line may leave out (`"z"`): more than any record has.
const MAX_OMITTED_ZEROS: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct TraceHeader {
    pub tool_version: String,
    /// `uname -r` of the machine recorded.
    pub kernel: String,
    /// RFC 3339 wall-clock time the recording started.
    pub started: String,
    /// Wall clock minus kernel monotonic clock, in ns (kernel timestamps → wall time).
    pub clock_offset_ns: i128,
    pub targets: Vec<TargetInfo>,
    pub ringbuf_bytes: u32,
    /// Secrets were overwritten before the records were written (see `redact`).
    pub redacted: bool,
    /// A flight recorder's file: the span its records cover (older ones were not kept).
    pub covers: Option<Window>,
}

/// The span of kernel monotonic time a file's records cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ns: u64,
    pub to_ns: u64,
}

impl Window {
    pub fn seconds(&self) -> f64 {
        self.to_ns.saturating_sub(self.from_ns) as f64 / 1e9
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

/// The trailer, written when recording stops.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEnd {
    pub ended: String,
    pub emitted: u64,
    pub lost_ringbuf: u64,
    pub lost_mapfull: u64,
    pub undecodable: u64,
    /// Kernel monotonic time tracing stopped (0: unknown).
    pub stop_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TraceItem {
    /// A raw kernel record (decode it with `events::decode`).
    Event(Vec<u8>),
    /// The addresses the live session used for the accept just before.
    Addrs { server: Option<SocketAddr>, client: Option<SocketAddr> },
    Listener { pid: u32, fd: i32, addr: SocketAddr },
    Exit { pid: u32, ts_ns: u64 },
    /// The live session drained the ring buffer here; the kernel had lost `lost`
    /// records during the batch since the previous drain (the handshakes open in it
    /// may miss events). `cut`: the batch stopped at its bound, the ring not yet empty.
    Drained { lost: u64, cut: bool },
    End(TraceEnd),
}

/// Writes a trace one line at a time: nothing but the current line is kept, so a
/// recording can run for weeks.
pub struct TraceWriter<W: Write> {
    out: W,
    line: String,
    /// Flush after each line (a live recording read while it grows); off for a file
    /// written at once (the flight recorder's).
    flush_lines: bool,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header line.
    pub fn new(out: W, header: &TraceHeader) -> io::Result<Self> {
        let mut w = TraceWriter { out, line: String::new(), flush_lines: true };
        let mut targets = String::from("[");
        for (i, t) in header.targets.iter().enumerate() {
            if i > 0 {
                targets.push(',');
            }
            push_object(&mut targets, [("pid", j(t.pid)), ("comm", j(&t.comm)), ("exe", j(&t.exe))]);
        }
        targets.push(']');
        push_object(
            &mut w.line,
            [
                ("format", j(FORMAT)),
                ("version", j(VERSION)),
                ("tool_version", j(&header.tool_version)),
                ("kernel", j(&header.kernel)),
                ("started", j(&header.started)),
                // A string: JSON readers commonly lose integers beyond 2^53.
                ("clock_offset_ns", j(header.clock_offset_ns.to_string())),
                ("targets", targets),
                ("ringbuf_bytes", j(header.ringbuf_bytes)),
                ("redacted", j(header.redacted)),
            ],
        );
        if let Some(c) = header.covers {
            // Before the closing brace: an optional last field.
            w.line.pop();
            w.line.push_str(&format!(r#","covers":{{"from_ns":{},"to_ns":{},"seconds":{:.3}}}}}"#, c.from_ns, c.to_ns, c.seconds()));
        }
        w.finish_line()?;
        Ok(w)
    }

    /// Lines are not flushed one by one (only at [`TraceWriter::end`]).
    pub fn buffered(mut self) -> Self {
        self.flush_lines = false;
        self
    }

    /// One kernel record, as received (after redaction).
    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.event_then_zeros(raw, 0)
    }

    /// One kernel record whose last `zeros` bytes are zero and left out of the line
    /// (`"z":N`): the flight recorder's reads and writes, whose fixed-size payload is
    /// mostly zeros past the bytes captured, take about a third of the room.
    pub fn event_then_zeros(&mut self, raw: &[u8], zeros: usize) -> io::Result<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.line.reserve(raw.len() * 2 + 20);
        self.line.push_str(r#"{"t":"ev","b":""#);
        let mut hex = [0u8; 128];
        for chunk in raw.chunks(hex.len() / 2) {
            for (&b, pair) in chunk.iter().zip(hex.chunks_exact_mut(2)) {
                pair[0] = HEX[usize::from(b >> 4)];
                pair[1] = HEX[usize::from(b & 0x0f)];
            }
            // Hex digits are ASCII.
            self.line.push_str(std::str::from_utf8(&hex[..chunk.len() * 2]).unwrap_or_default());
        }
        self.line.push('"');
        if zeros > 0 {
            self.line.push_str(&format!(r#","z":{zeros}"#));
        }
        self.line.push('}');
        self.finish_line()
    }

    /// Right after an accept's event: the addresses the live session used for it.
    pub fn addrs(&mut self, server: Option<SocketAddr>, client: Option<SocketAddr>) -> io::Result<()> {
        let addr = |a: Option<SocketAddr>| j(a.map(|a| a.to_string()));
        self.object([("t", j("addrs")), ("server", addr(server)), ("client", addr(client))])
    }

    /// A listening socket's address learned from /proc.
    pub fn listener(&mut self, pid: u32, fd: i32, addr: SocketAddr) -> io::Result<()> {
        self.object([("t", j("listener")), ("pid", j(pid)), ("fd", j(fd)), ("addr", j(addr.to_string()))])
    }

    /// A target exit noticed by the /proc rescan (not by the kernel).
    /// The end of a batch of records (see [`TraceItem::Drained`]).
    pub fn drained(&mut self, lost: u64, cut: bool) -> io::Result<()> {
        if cut {
            self.object([("t", j("drained")), ("lost", j(lost)), ("cut", j(true))])
        } else {
            self.object([("t", j("drained")), ("lost", j(lost))])
        }
    }

    pub fn exit(&mut self, pid: u32, ts_ns: u64) -> io::Result<()> {
        self.object([("t", j("exit")), ("pid", j(pid)), ("ts_ns", j(ts_ns))])
    }

    /// Writes the trailer, flushes and hands the writer back.
    pub fn end(mut self, end: &TraceEnd) -> io::Result<W> {
        self.object([
            ("t", j("end")),
            ("ended", j(&end.ended)),
            ("emitted", j(end.emitted)),
            ("lost_ringbuf", j(end.lost_ringbuf)),
            ("lost_mapfull", j(end.lost_mapfull)),
            ("undecodable", j(end.undecodable)),
            ("stop_ns", j(end.stop_ns)),
        ])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn object<const N: usize>(&mut self, fields: [(&str, String); N]) -> io::Result<()> {
        push_object(&mut self.line, fields);
        self.finish_line()
    }

    /// Writes and flushes one whole line: a recording cut short loses at most its
    /// last line, and a buffered writer keeps nothing back.
    fn finish_line(&mut self) -> io::Result<()> {
        self.line.push('\n');
        let flush = self.flush_lines;
        let result = self.out.write_all(self.line.as_bytes()).and_then(|()| if flush { self.out.flush() } else { Ok(()) });
        self.line.clear();
        result
    }
}

/// One JSON value as text.
fn j(v: impl serde::Serialize) -> String {
    // Serializing strings, integers, bools and options cannot fail.
    serde_json::to_string(&v).unwrap_or_else(|_| "null".to_string())
}

/// Appends `{"k":v,...}` (values already JSON text) with the keys in the order
/// given: serde_json's Map sorts keys unless its preserve_order feature is on,
/// and the format documents an order.
fn push_object<const N: usize>(out: &mut String, fields: [(&str, String); N]) {
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&j(key));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

/// A whole trace file.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub header: TraceHeader,
    /// Every line after the header, the trailer (when present) last.
    pub items: Vec<TraceItem>,
    /// No trailer: the recording was cut short.
    pub truncated: bool,
}

impl Trace {
    /// The trailer, when the recording ended normally.
    pub fn end(&self) -> Option<&TraceEnd> {
        match self.items.last() {
            Some(TraceItem::End(e)) => Some(e),
            _ => None,
        }
    }
}

/// Why a trace file could not be read; `line` counts from 1 (0: before any line).
#[derive(Debug)]
pub struct TraceError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TraceError {}

fn err(line: usize, message: impl Into<String>) -> TraceError {
    TraceError { line, message: message.into() }
}

/// The longest line a trace holds is its header (targets with their paths); a record
/// is under 1 KiB of hex.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Read a whole trace file (from any BufRead).
///
/// A last line without its newline that does not parse is a write the recorder
/// did not finish (it was killed): dropped, and the trace is `truncated`.
pub fn read_trace(mut input: impl BufRead) -> Result<Trace, TraceError> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut header: Option<TraceHeader> = None;
    let mut items = Vec::new();
    let mut ended = false;
    loop {
        buf.clear();
        // A line is read up to the bound and no further: /dev/zero or a file without
        // newlines is an error, not a memory that grows until it runs out.
        let n = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| err(line_no + 1, format!("read error: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if n > MAX_LINE_BYTES {
            return Err(err(line_no, format!("longer than {} KiB: not a handshake-trace trace line", MAX_LINE_BYTES / 1024)));
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let parsed = parse_line(&buf, line_no, header.is_none());
        let parsed = match parsed {
            Ok(p) => p,
            // Only a trace that has a header can be "cut short".
            Err(_) if !complete && header.is_some() && !ended => break,
            Err(e) => return Err(e),
        };
        match parsed {
            Line::Header(h) => header = Some(h),
            Line::Item(item) => {
                if ended {
                    return Err(err(line_no, "data after the trailer (\"t\":\"end\")"));
                }
                ended = matches!(item, TraceItem::End(_));
                items.push(item);
            }
        }
    }
    let Some(header) = header else {
        return Err(err(1, "empty file: not a handshake-trace trace"));
    };
    Ok(Trace { header, items, truncated: !ended })
}

enum Line {
    Header(TraceHeader),
    Item(TraceItem),
}

fn parse_line(bytes: &[u8], line: usize, first: bool) -> Result<Line, TraceError> {
    let text = std::str::from_utf8(bytes).map_err(|_| err(line, "not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(err(line, "empty line"));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if first {
            err(line, format!("not a handshake-trace trace (the first line is not its JSON header: {e})"))
        } else {
            err(line, format!("malformed JSON: {e}"))
        }
    })?;
    let Value::Object(obj) = value else {
        return Err(err(line, if first { "not a handshake-trace trace (the first line is not a JSON object)" } else { "not a JSON object" }));
    };
    if first {
        parse_header(&obj, line).map(Line::Header)
    } else {
        parse_item(&obj, line).map(Line::Item)
    }
}

fn parse_header(obj: &Map<String, Value>, line: usize) -> Result<TraceHeader, TraceError> {
    if obj.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(err(line, format!("not a handshake-trace trace (the header's \"format\" is not \"{FORMAT}\")")));
    }
    let version = obj.get("version").and_then(Value::as_u64).ok_or_else(|| err(line, "header: \"version\" is missing or not a positive integer"))?;
    if version > VERSION {
        return Err(err(line, format!("trace format version {version} is newer than this tool reads (version {VERSION}): upgrade handshake-trace")));
    }
    if version == 0 {
        return Err(err(line, "trace format version 0 does not exist"));
    }
    let f = Fields { obj, line, what: "header" };
    let clock_offset_ns = match obj.get("clock_offset_ns") {
        Some(Value::String(s)) => s.parse::<i128>().map_err(|_| err(line, format!("header: \"clock_offset_ns\" is not an integer: {s:?}")))?,
        // Accepted too: a plain JSON integer (within i64/u64).
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(v), _) => i128::from(v),
            (None, Some(v)) => i128::from(v),
            _ => return Err(err(line, "header: \"clock_offset_ns\" is not an integer")),
        },
        _ => return Err(err(line, "header: \"clock_offset_ns\" is missing or not a string")),
    };
    // A wall clock minus a monotonic one, both u64 nanoseconds, lies within ±u64::MAX.
    if clock_offset_ns.unsigned_abs() > u128::from(u64::MAX) {
        return Err(err(line, format!("header: \"clock_offset_ns\" {clock_offset_ns} is out of range (within ±{} ns)", u64::MAX)));
    }
    let targets = match obj.get("targets") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let Value::Object(t) = t else {
                    return Err(err(line, format!("header: targets[{i}] is not an object")));
                };
                let tf = Fields { obj: t, line, what: "header target" };
                let exe = match t.get("exe") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(err(line, format!("header: targets[{i}].exe is not a string or null"))),
                };
                Ok(TargetInfo { pid: tf.u32("pid")?, comm: tf.string("comm")?, exe })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(err(line, "header: \"targets\" is missing or not an array")),
    };
    let redacted = obj.get("redacted").and_then(Value::as_bool).ok_or_else(|| err(line, "header: \"redacted\" is missing or not a boolean"))?;
    Ok(TraceHeader {
        tool_version: f.string("tool_version")?,
        kernel: f.string("kernel")?,
        started: f.string("started")?,
        clock_offset_ns,
        targets,
        ringbuf_bytes: f.u32("ringbuf_bytes")?,
        redacted,
        covers: parse_window(obj.get("covers"), line)?,
    })
}

/// The optional `"covers":{"from_ns":N,"to_ns":N,...}` of a flight recorder's file.
fn parse_window(v: Option<&Value>, line: usize) -> Result<Option<Window>, TraceError> {
    let Some(v) = v else { return Ok(None) };
    let ns = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| err(line, format!("header: \"covers\".{k} is missing or not an integer")));
    Ok(Some(Window { from_ns: ns("from_ns")?, to_ns: ns("to_ns")? }))
}

fn parse_item(obj: &Map<String, Value>, line: usize) -> Result<TraceItem, TraceError> {
    let Some(t) = obj.get("t").and_then(Value::as_str) else {
        return Err(err(line, "no \"t\" (record type) string"));
    };
    let f = Fields { obj, line, what: t };
    Ok(match t {
        "ev" => {
            let hex = f.string("b")?;
            let mut raw = decode_hex(&hex).map_err(|m| err(line, format!("ev: \"b\": {m}")))?;
            // Trailing zero bytes the writer left out (a record is never this long).
            let zeros = if obj.contains_key("z") { f.u64("z")? } else { 0 };
            if zeros > MAX_OMITTED_ZEROS {
                return Err(err(line, format!("ev: \"z\" ({zeros}) is more than a record holds")));
            }
            raw.resize(raw.len() + zeros as usize, 0);
            TraceItem::Event(raw)
        }
        "addrs" => TraceItem::Addrs { server: f.opt_addr("server")?, client: f.opt_addr("client")? },
        "listener" => {
            let addr = f.string("addr")?;
            let addr = addr.parse::<SocketAddr>().map_err(|_| err(line, format!("listener: \"addr\" is not a socket address: {addr:?}")))?;
            TraceItem::Listener { pid: f.u32("pid")?, fd: f.i32("fd")?, addr }
        }
        "exit" => TraceItem::Exit { pid: f.u32("pid")?, ts_ns: f.u64("ts_ns")? },
        "drained" => TraceItem::Drained { lost: f.u64("lost")?, cut: obj.get("cut").and_then(Value::as_bool).unwrap_or(false) },
        "end" => TraceItem::End(TraceEnd {
            ended: f.string("ended")?,
            emitted: f.u64("emitted")?,
            lost_ringbuf: f.u64("lost_ringbuf")?,
            lost_mapfull: f.u64("lost_mapfull")?,
            undecodable: f.u64("undecodable")?,
            // Optional: 0 means unknown (the replay then stops at the last event).
            stop_ns: if obj.contains_key("stop_ns") { f.u64("stop_ns")? } else { 0 },
        }),
        other => return Err(err(line, format!("unknown record type \"t\":{other:?}"))),
    })
}

/// Typed field access with messages that name the record type and field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    line: usize,
    what: &'a str,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Result<&Value, TraceError> {
        self.obj.get(key).ok_or_else(|| err(self.line, format!("{}: \"{key}\" is missing", self.what)))
    }

    fn bad(&self, key: &str, wanted: &str) -> TraceError {
        err(self.line, format!("{}: \"{key}\" is not {wanted}", self.what))
    }

    fn string(&self, key: &str) -> Result<String, TraceError> {
        self.get(key)?.as_str().map(str::to_owned).ok_or_else(|| self.bad(key, "a string"))
    }

    fn u64(&self, key: &str) -> Result<u64, TraceError> {
        self.get(key)?.as_u64().ok_or_else(|| self.bad(key, "a non-negative integer"))
    }

    fn u32(&self, key: &str) -> Result<u32, TraceError> {
        u32::try_from(self.u64(key)?).map_err(|_| self.bad(key, "a 32-bit unsigned integer"))
    }

    /// A socket address string, or null / absent.
    fn opt_addr(&self, key: &str) -> Result<Option<SocketAddr>, TraceError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| self.bad(key, "a socket address")),
            Some(_) => Err(self.bad(key, "a socket address string or null")),
        }
    }

    fn i32(&self, key: &str) -> Result<i32, TraceError> {
        self.get(key)?.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(|| self.bad(key, "a 32-bit integer"))
    }
}

/// Hex to bytes, either case.
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() & 1 == 1 {
        return Err(format!("odd number of hex digits ({})", b.len()));
    }
    b.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(format!("not hex at character {}", 2 * i + usize::from(nibble(pair[0]).is_some()))),
        })
        .collect()
}

#[cfg(test)]
mod tests;

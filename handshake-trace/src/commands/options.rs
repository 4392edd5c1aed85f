//! The options of the tracing commands (watch, record, analyze, and the lab through
//! watch): what to trace, how to attach, and what the pipeline and the printer apply.
use crate::{
    capture::probes::{AttachMode, CaptureTier},
    output::{
        brief::{ProbeView, VerdictSet},
        columns::Terminal,
        printer::PrintOptions,
    },
    pipeline::{PipelineOptions, Selection},
};

/// Options of `watch`, `record` and `analyze` (the parts that apply).
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Explicit targets; empty = every mysqld/mariadbd, including ones started later.
    pub pids: Vec<u32>,
    /// Keep only connections accepted on this local port.
    pub port: Option<u16>,
    pub json: bool,
    pub ringbuf_bytes: Option<u32>,
    /// Print every decoded kernel event too, to the log (debugging).
    pub raw_events: bool,
    /// Show the full timeline of successful handshakes slower than this.
    pub slow_ms: Option<f64>,
    /// Instead of a line per successful handshake, a roll-up every this many seconds.
    pub rollup_secs: Option<u64>,
    /// One line per handshake, identical failures folded.
    pub brief: bool,
    /// The verdicts whose timelines are printed (brief mode) or kept in JSON records;
    /// None: the mode's default (brief: none, JSON: all).
    pub timeline: Option<VerdictSet>,
    /// Rows of the grouped summary (and of each roll-up).
    pub top: usize,
    /// Which finished handshakes are shown and counted.
    pub select: Selection,
    /// Keep every finished handshake's outcome in the summary (the lab explains them).
    pub keep_outcomes: bool,
    /// Also write the raw (redacted) events to this trace file, for `analyze`.
    pub record: Option<std::path::PathBuf>,
    /// Replace an existing file at `record` (it is refused otherwise).
    pub overwrite: bool,
    /// How the syscall programs attach.
    pub attach: AttachMode,
    /// Which hooks capture the handshakes.
    pub capture: CaptureTier,
    /// Width, colour and dates of the text output.
    pub term: Terminal,
    /// Width and dates of the notices and the summary (stderr).
    pub notices: Terminal,
    /// The operator's connect_timeout and max_connect_errors, over what the servers'
    /// command lines and option files say (`--connect-timeout`, `--max-connect-errors`).
    pub server: crate::config::Overrides,
    /// How probes are shown (`--probes`).
    pub probes: ProbeView,
}

impl WatchOptions {
    /// How the printer should print.
    pub fn print(&self) -> PrintOptions {
        PrintOptions {
            json: self.json,
            slow_ms: self.slow_ms,
            rollup: self.rollup_secs.is_some(),
            brief: self.brief,
            timeline: self.timeline,
            top: self.top,
            term: self.term,
            probes: self.probes,
        }
    }

    /// What the pipeline applies.
    pub fn pipeline(&self) -> PipelineOptions {
        PipelineOptions { port: self.port, select: self.select.clone(), keep_outcomes: self.keep_outcomes }
    }
}

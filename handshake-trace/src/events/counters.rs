/// Records the kernel programs emitted and lost, summed over CPUs (read from the
/// kernel's counters live, from the trailer of a trace file on replay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub emitted: u64,
    pub lost_ringbuf: u64,
    pub lost_mapfull: u64,
    /// Accepts on other ports than `--port`'s, dropped in the kernel (live only).
    pub filtered_port: u64,
}

impl Counters {
    pub fn lost(&self) -> u64 {
        self.lost_ringbuf + self.lost_mapfull
    }
}

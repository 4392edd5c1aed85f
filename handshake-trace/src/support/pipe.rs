//! Output to a pipe the reader may close (`watch | head -2`): a closed pipe is not an
//! error but the end of the trace. The writer swallows what can no longer be written and
//! raises a flag the live loop stops on.
use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

/// Wraps a writer (stdout); after the first `BrokenPipe` every write succeeds unseen.
pub struct PipeWriter<W: Write> {
    inner: W,
    closed: Arc<AtomicBool>,
}

impl<W: Write> PipeWriter<W> {
    pub fn new(inner: W) -> Self {
        PipeWriter { inner, closed: Arc::new(AtomicBool::new(false)) }
    }

    /// Set once the reader has gone.
    pub fn closed(&self) -> Arc<AtomicBool> {
        self.closed.clone()
    }

    fn gone(&self, e: io::Error) -> io::Result<()> {
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.closed.store(true, Ordering::Relaxed);
            Ok(())
        } else {
            Err(e)
        }
    }
}

impl<W: Write> Write for PipeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Ok(n) => Ok(n),
            Err(e) => self.gone(e).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.inner.flush() {
            Ok(()) => Ok(()),
            Err(e) => self.gone(e),
        }
    }
}

/// Completes once `closed` is set (polled: the flag is raised by a synchronous write).
pub async fn closed(closed: Arc<AtomicBool>) {
    while !closed.load(Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_swallowed_and_flagged_other_errors_are_not() {
        let mut w = PipeWriter::new(Closed);
        assert!(!w.closed().load(Ordering::Relaxed));
        assert_eq!(w.write(b"line\n").unwrap(), 5);
        assert!(w.closed().load(Ordering::Relaxed));
        w.write_all(b"more\n").unwrap();
        w.flush().unwrap();
        let mut w = PipeWriter::new(Full);
        assert!(w.write(b"x").is_err());
        assert!(!w.closed().load(Ordering::Relaxed));
    }
}

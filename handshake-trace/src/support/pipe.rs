//! Output to a pipe the reader may close (`watch | head -2`): a closed pipe is not an
//! error but the end of the trace. The writer swallows what can no longer be written and
//! raises a flag the live loop stops on.
//!
//! A reader that stays but stops reading must not hold the tracer either: [`Stdout`]
//! waits for room in bounded steps, and once a stop was asked for ([`stop_on_signals`]:
//! a flag set from the signal handler itself, not by the blocked loop) it gives the
//! output up as if the reader had gone.
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

/// Sets `flag` on SIGINT, SIGTERM and SIGHUP from now on; their default action (ending
/// the process before it detaches and writes its summary) no longer applies.
pub fn stop_on_signals(flag: &Arc<AtomicBool>) -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let flag = flag.clone();
        // SAFETY: the action is one atomic store, which is async-signal-safe.
        unsafe { signal_hook_registry::register(signal, move || flag.store(true, Ordering::SeqCst)) }?;
    }
    Ok(())
}

/// How long one wait for room in stdout lasts before the stop flag is looked at again.
const WAIT_STEP_MS: i32 = 100;

/// Standard output, written without std's buffer: each write waits until the fd has
/// room (in [`WAIT_STEP_MS`] steps) and then writes at most `PIPE_BUF` bytes, which a
/// pipe with room takes without blocking. Once `stopping` is set, a stdout with no room
/// fails as a closed pipe does. A regular file always has room: it is written whole,
/// with no poll (a JSON trace to a file: one write per drain, not per 4 KiB).
pub struct Stdout {
    fd: libc::c_int,
    stopping: Arc<AtomicBool>,
    regular_file: bool,
}

impl Stdout {
    pub fn new(stopping: Arc<AtomicBool>) -> Self {
        Stdout { fd: libc::STDOUT_FILENO, stopping, regular_file: is_regular_file(libc::STDOUT_FILENO) }
    }
}

fn is_regular_file(fd: libc::c_int) -> bool {
    // SAFETY: fstat writes into a zeroed stat of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.regular_file {
            // SAFETY: buf.len() bytes of buf are readable.
            let w = unsafe { libc::write(self.fd, buf.as_ptr().cast(), buf.len()) };
            return if w >= 0 { Ok(w as usize) } else { Err(io::Error::last_os_error()) };
        }
        loop {
            let mut p = libc::pollfd { fd: self.fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut p, 1, WAIT_STEP_MS) };
            if ready > 0 {
                let n = buf.len().min(libc::PIPE_BUF);
                // SAFETY: n bytes of buf are readable.
                let w = unsafe { libc::write(self.fd, buf.as_ptr().cast(), n) };
                match w {
                    0.. => return Ok(w as usize),
                    _ => match io::Error::last_os_error() {
                        e if e.kind() == io::ErrorKind::Interrupted => continue,
                        e => return Err(e),
                    },
                }
            }
            if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdout not read while stopping"));
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

    /// A pipe nobody reads, filled up: (read end, write end).
    fn full_pipe() -> (libc::c_int, libc::c_int) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let chunk = [b'x'; 4096];
        loop {
            let mut p = libc::pollfd { fd: fds[1], events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd; the write is of a buffer that long.
            if unsafe { libc::poll(&mut p, 1, 0) } == 0 {
                return (fds[0], fds[1]);
            }
            assert!(unsafe { libc::write(fds[1], chunk.as_ptr().cast(), chunk.len()) } > 0);
        }
    }

    #[test]
    fn a_stdout_nobody_reads_is_given_up_once_stopping() {
        let (r, w) = full_pipe();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut out = PipeWriter::new(Stdout { fd: w, stopping: stopping.clone(), regular_file: is_regular_file(w) });
        let flag = stopping.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        let start = std::time::Instant::now();
        // Blocks while not stopping, then the output is given up as a closed pipe.
        out.write_all(&[b'y'; 10_000]).unwrap();
        out.flush().unwrap();
        let took = start.elapsed();
        setter.join().unwrap();
        assert!(took >= std::time::Duration::from_millis(250) && took < std::time::Duration::from_secs(2), "{took:?}");
        assert!(out.closed().load(Ordering::Relaxed));
        // A pipe with room is written as before: at most PIPE_BUF bytes a write.
        let mut buf = vec![0u8; 1 << 20];
        // SAFETY: reading into a buffer that long.
        while unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) } == buf.len() as isize {}
        let mut s = Stdout { fd: w, stopping: Arc::new(AtomicBool::new(false)), regular_file: is_regular_file(w) };
        assert_eq!(s.write(&[b'z'; 10_000]).unwrap(), libc::PIPE_BUF);
        // SAFETY: closing our own descriptors.
        unsafe { libc::close(r) };
        unsafe { libc::close(w) };
    }

    #[test]
    fn a_regular_file_is_written_whole_in_one_write() {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("handshake-trace-pipe-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        let mut s = Stdout { fd, stopping: Arc::new(AtomicBool::new(true)), regular_file: is_regular_file(fd) };
        assert!(s.regular_file);
        assert_eq!(s.write(&[b'z'; 100_000]).unwrap(), 100_000);
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_000);
        std::fs::remove_file(&path).unwrap();
    }
}

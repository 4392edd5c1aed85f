//! OTLP/HTTP's one request: POST a protobuf body, read the status line. Plain HTTP/1.1
//! over a fresh connection each time (an export a second at most), every step under
//! the export timeout, the answer read up to a bound.
use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use super::options::Endpoint;

/// The answer's head is read up to this many bytes (the status line is all we use).
const MAX_ANSWER: usize = 16 * 1024;

/// Why an export failed (words for the agent's one-time warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    Connect(String),
    Io(String),
    Status(u16),
    BadAnswer,
    Timeout,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostError::Connect(e) => write!(f, "cannot connect: {e}"),
            PostError::Io(e) => write!(f, "{e}"),
            PostError::Status(s) => write!(f, "the collector answered HTTP {s}"),
            PostError::BadAnswer => write!(f, "the collector's answer is not HTTP"),
            PostError::Timeout => write!(f, "timed out"),
        }
    }
}

/// The head of one POST request.
pub fn request_head(ep: &Endpoint, headers: &[(String, String)], body_len: usize) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {body_len}\r\nConnection: close\r\nUser-Agent: handshake-trace/{}\r\n",
        ep.path,
        ep.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The status code of an HTTP/1.x answer's first line.
pub fn status_code(answer: &[u8]) -> Option<u16> {
    let line_end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    let mut words = line.split(' ');
    words.next().filter(|v| v.starts_with("HTTP/1."))?;
    words.next()?.parse().ok()
}

/// POST `body`; Ok when the collector answered 2xx.
pub fn post(ep: &Endpoint, headers: &[(String, String)], body: &[u8], timeout: Duration) -> Result<(), PostError> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(PostError::Timeout);
    let addrs: Vec<_> = (ep.host.as_str(), ep.port).to_socket_addrs().map_err(|e| PostError::Connect(e.to_string()))?.take(4).collect();
    let mut last = PostError::Connect("no address".into());
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = PostError::Connect(e.to_string()),
        }
    }
    let mut s = stream.ok_or(last)?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => PostError::Timeout,
        _ => PostError::Io(e.to_string()),
    };
    s.set_nodelay(true).ok();
    s.set_write_timeout(Some(left()?)).map_err(io)?;
    s.write_all(request_head(ep, headers, body.len()).as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while answer.len() < MAX_ANSWER && !answer.windows(2).any(|w| w == b"\r\n") {
        s.set_read_timeout(Some(left()?)).map_err(io)?;
        match s.read(&mut buf).map_err(io)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    match status_code(&answer) {
        Some(c) if (200..300).contains(&c) => Ok(()),
        Some(c) => Err(PostError::Status(c)),
        None => Err(PostError::BadAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn the_request_head_names_the_path_host_length_and_headers() {
        let head = request_head(&endpoint("http://collector:4318/v1/logs"), &[("Authorization".into(), "Bearer x".into())], 42);
        assert!(head.starts_with("POST /v1/logs HTTP/1.1\r\nHost: collector:4318\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/x-protobuf\r\nContent-Length: 42\r\n"), "{head}");
        assert!(head.ends_with("Authorization: Bearer x\r\n\r\n"), "{head}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 200"), None);
    }

    #[test]
    fn a_real_exchange_and_a_silent_peer() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = endpoint(&format!("http://{}/v1/metrics", l.local_addr().unwrap()));
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"body!") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
            // The second connection is accepted and never answered.
            let (_silent, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(800));
            String::from_utf8(got).unwrap()
        });
        assert_eq!(post(&ep, &[], b"body!", Duration::from_secs(5)), Ok(()));
        let t = Instant::now();
        assert_eq!(post(&ep, &[], b"body!", Duration::from_millis(300)), Err(PostError::Timeout));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let got = server.join().unwrap();
        assert!(got.starts_with("POST /v1/metrics HTTP/1.1\r\n"), "{got}");
    }
}

//! Just enough DNS for the lab's slow-name-resolution scenario: the PTR query the
//! built-in server sends before its greeting, the answer it reads, and a loopback
//! resolver that answers late — a real UDP exchange, only slow.
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
}

/// A recursive PTR query for `name`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    push_name(&mut q, name);
    q.extend_from_slice(&TYPE_PTR.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// Read a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
            continue;
        }
        labels.push(String::from_utf8_lossy(msg.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
    None
}

/// The question name of a query.
pub fn question_name(msg: &[u8]) -> Option<String> {
    read_name(msg, 12).map(|(n, _)| n)
}

/// The first PTR answer's name in a response.
pub fn answer_name(msg: &[u8]) -> Option<String> {
    if msg.len() < 12 || u16::from_be_bytes([msg[6], msg[7]]) == 0 {
        return None;
    }
    let (_, mut pos) = read_name(msg, 12)?;
    pos += 4; // type, class
    let (_, after) = read_name(msg, pos)?;
    let rtype = u16::from_be_bytes([*msg.get(after)?, *msg.get(after + 1)?]);
    if rtype != TYPE_PTR {
        return None;
    }
    read_name(msg, after + 10).map(|(n, _)| n)
}

/// A response to `q` with one PTR answer.
pub fn response(q: &[u8], answer: &str) -> Option<Vec<u8>> {
    let (_, qend) = read_name(q, 12)?;
    let question = q.get(12..qend + 4)?;
    let mut r = Vec::with_capacity(q.len() + 64);
    r.extend_from_slice(&q[..2]);
    r.extend_from_slice(&0x8180u16.to_be_bytes()); // response, RD, RA
    r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 12]); // the question's name
    r.extend_from_slice(&TYPE_PTR.to_be_bytes());
    r.extend_from_slice(&CLASS_IN.to_be_bytes());
    r.extend_from_slice(&60u32.to_be_bytes());
    let mut rdata = Vec::new();
    push_name(&mut rdata, answer);
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(&rdata);
    Some(r)
}

/// A resolver on loopback that answers every PTR query with `name` after `delay`.
/// Runs on its own thread for the life of the process; returns its address.
pub fn slow_resolver(delay: Duration, name: &'static str) -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let addr = sock.local_addr()?;
    std::thread::Builder::new().name("lab-dns".into()).spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = buf[..n].to_vec();
            let s = sock.try_clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                if let (Ok(s), Some(r)) = (s, response(&q, name)) {
                    let _ = s.send_to(&r, from);
                }
            });
        }
    })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_response_round_trip() {
        let q = query(7, "1.0.0.127.in-addr.arpa");
        assert_eq!(question_name(&q).as_deref(), Some("1.0.0.127.in-addr.arpa"));
        let r = response(&q, "client.lab.example").unwrap();
        assert_eq!(&r[..2], &7u16.to_be_bytes());
        assert_eq!(answer_name(&r).as_deref(), Some("client.lab.example"));
        // A query is not an answer.
        assert_eq!(answer_name(&q), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let msg: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = answer_name(&msg);
            let _ = question_name(&msg);
            let _ = response(&msg, "a.b");
        }
    }

    #[test]
    fn the_slow_resolver_answers_late_over_udp() {
        let addr = slow_resolver(Duration::from_millis(300), "late.lab").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        s.send_to(&query(1, "1.0.0.127.in-addr.arpa"), addr).unwrap();
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(answer_name(&buf[..n]).as_deref(), Some("late.lab"));
    }
}

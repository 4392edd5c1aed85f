//! The lab's scripted client (`handshake-trace lab-client`): a real MySQL-protocol
//! client in its own process, so a scenario can delay its login or freeze it with
//! SIGSTOP, and it reports failures the way libmysql words them.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use handshake_trace::protocol::{ErrPacket, Header};

use crate::wire;

#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    /// Wait this long after the greeting before sending the login.
    pub delay: Duration,
    /// Stop this process (SIGSTOP) right after reading the greeting: a starved client.
    pub stop_after_greeting: bool,
}

/// libmysql's CR_SERVER_LOST, with the stage and errno as the C client prints them.
fn lost(stage: &str, e: &std::io::Error) -> String {
    format!(
        "ERROR 2013 (HY000): Lost connection to MySQL server at '{stage}', system error: {}",
        e.raw_os_error().unwrap_or(0)
    )
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let head = Header::parse(h);
    let mut body = vec![0u8; head.len as usize];
    s.read_exact(&mut body)?;
    Ok((head.seq, body))
}

/// Run the plan; Ok(message) when logged in, Err(message) with the client's error.
pub fn run(plan: &ClientPlan) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&plan.addr, Duration::from_secs(10))
        .map_err(|e| format!("ERROR 2002 (HY000): Can't connect to MySQL server on '{}' ({})", plan.addr, e.raw_os_error().unwrap_or(0)))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let eof = std::io::Error::from_raw_os_error(0);
    let (_, greeting) = read_packet(&mut s).map_err(|e| lost("reading initial communication packet", if e.kind() == std::io::ErrorKind::UnexpectedEof { &eof } else { &e }))?;
    if greeting.first() == Some(&0xff) {
        return Err(err_text(&greeting));
    }
    let scramble = wire::greeting_scramble(&greeting).ok_or("ERROR 2027 (HY000): Malformed packet")?;
    if plan.stop_after_greeting {
        // SAFETY: stopping ourselves; the lab sends SIGCONT.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
    std::thread::sleep(plan.delay);
    let login = wire::login_packet(&plan.user, &plan.password, &scramble, None);
    s.write_all(&login).map_err(|e| lost("sending authentication information", &e))?;
    match read_packet(&mut s) {
        Ok((_, reply)) if reply.first() == Some(&0x00) => Ok(format!("logged in as {}", plan.user)),
        Ok((_, reply)) if reply.first() == Some(&0xff) => Err(err_text(&reply)),
        Ok((_, reply)) => Err(format!("unexpected reply 0x{:02x}", reply.first().copied().unwrap_or(0))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(lost("reading authorization packet", &eof)),
        Err(e) => Err(lost("reading authorization packet", &e)),
    }
}

/// "ERROR code (state): message" from an ERR payload.
fn err_text(p: &[u8]) -> String {
    let e = ErrPacket::parse(p);
    format!("ERROR {} ({}): {}", e.code, e.sqlstate.as_deref().unwrap_or("HY000"), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packets_read_like_the_c_client() {
        let mut p = vec![0xff, 0x15, 0x04, b'#'];
        p.extend_from_slice(b"28000Access denied");
        assert_eq!(err_text(&p), "ERROR 1045 (28000): Access denied");
        let mut p = vec![0xff, 0x10, 0x04];
        p.extend_from_slice(b"Too many connections");
        assert_eq!(err_text(&p), "ERROR 1040 (HY000): Too many connections");
        let e = std::io::Error::from_raw_os_error(104);
        assert_eq!(
            lost("reading authorization packet", &e),
            "ERROR 2013 (HY000): Lost connection to MySQL server at 'reading authorization packet', system error: 104"
        );
    }
}

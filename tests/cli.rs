//! The binary's answers to bad input and its `doctor`, as root.
use std::{process::Command, time::Duration};

use handshake_trace_tests::*;

#[test]
fn doctor_passes_here_and_says_kprobes_are_not_needed() {
    let Some(bin) = ready("doctor_passes_here_and_says_kprobes_are_not_needed") else { return };
    let out = Command::new(&bin).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("[FAIL]"), "{text}");
    use handshake_trace::capture::probes::{program_count, AttachMode};
    let programs = program_count(AttachMode::default());
    assert!(text.contains(&format!("kernel programs: {programs} programs verified")), "{text}");
    // The other mode is checked too.
    let other = program_count(if AttachMode::default() == AttachMode::Raw { AttachMode::Tracepoints } else { AttachMode::Raw });
    assert!(text.contains(&format!("{other} programs verified")), "{text}");
    assert!(text.contains("kprobes:") && text.contains("not needed"), "{text}");
}

#[test]
fn doctor_lists_a_running_server_with_its_port_and_version() {
    let Some(bin) = ready("doctor_lists_a_running_server_with_its_port_and_version") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let out = Command::new(&bin).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("pid {} mariadbd", db.pid())))
        .unwrap_or_else(|| panic!("server not listed:\n{text}"));
    assert!(line.contains(&db.addr().to_string()), "{line}");
    assert!(line.contains("MariaDB"), "{line}");
}

#[test]
fn watch_as_an_unprivileged_user_fails_clearly() {
    let Some(bin) = ready("watch_as_an_unprivileged_user_fails_clearly") else { return };
    // The binary must be reachable by `nobody`: copy it to a world-readable place.
    let copy = std::env::temp_dir().join(format!("handshake-trace-nobody-{}", std::process::id()));
    std::fs::copy(&bin, &copy).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&copy)
        .args(["watch", "-p", "1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root (or CAP_BPF and CAP_PERFMON)"), "{err}");
}

#[test]
fn watch_of_a_missing_pid_fails_clearly() {
    let Some(bin) = ready("watch_of_a_missing_pid_fails_clearly") else { return };
    let out = Command::new(&bin).args(["watch", "-p", "4194303"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no process with pid 4194303"), "{err}");
}

#[test]
fn watch_with_no_server_running_fails_clearly() {
    let Some(bin) = ready("watch_with_no_server_running_fails_clearly") else { return };
    // In a PID namespace of its own, with its own /proc, the tracer finds no server
    // whatever else runs on this machine (a developer's MariaDB, another test run).
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&bin)
        .args(["watch", "-d", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no MySQL server process found (looked for mysqld, mariadbd)"), "{err}");
}

#[test]
fn pids_in_one_value_and_option_mistakes_get_clear_answers() {
    let Some(bin) = ready("pids_in_one_value_and_option_mistakes_get_clear_answers") else { return };
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // `-p "$(pidof mariadbd)"` with several servers: each pid is checked, none is a parse error.
    let (code, err) = run(&["watch", "-p", "999999 999998", "-d", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no process with pid 999999"), "{err}");
    let (code, err) = run(&["watch", "-p", "12 x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`x` is not a process id"), "{err}");
    let (code, err) = run(&["watch", "--rollup", "0"]);
    assert_eq!(code, Some(2), "{err}");
    // -j with --rollup writes roll-up records (unit-tested); its summary record needs -j.
    let (code, err) = run(&["watch", "--json-summary"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["watch", "--client", "10.1.2.3/8"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("did you mean 10.0.0.0/8?"), "{err}");
    let (code, err) = run(&["watch", "--user", ""]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("an empty user name matches no login"), "{err}");
        let (code, err) = run(&["watch", "--timeline", "none"]);
    assert_eq!(code, Some(2), "--timeline needs --brief or -j: {err}");
}

#[test]
fn watch_of_a_process_that_is_not_a_server_warns() {
    let Some(bin) = ready("watch_of_a_process_that_is_not_a_server_warns") else { return };
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(&bin).args(["watch", "-p", &sleeper.id().to_string(), "-d", "1"]).output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("WARNING: pid {} (sleep) is not named mysqld or mariadbd", sleeper.id())), "{err}");
}

/// `watch -j | head -1`: the reader closes the pipe after one line; the tracer stops by
/// itself, prints its summary to stderr and exits 0, with no "Broken pipe" error.
#[test]
fn a_closed_stdout_ends_watch_quietly_with_the_summary() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let Some(bin) = ready("a_closed_stdout_ends_watch_quietly_with_the_summary") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    /// A failing test must not leave the tracer attached.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Killed(
        Command::new(&bin)
            .args(["watch", "-j", "-p", &db.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut started = String::new();
    while !started.starts_with("Tracing") {
        started.clear();
        assert!(stderr.read_line(&mut started).unwrap() > 0, "tracer exited before tracing");
    }
    let login = |password: &str| {
        let _ = db.client(LAB_USER, password, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    };
    // The reader: one line, then it closes its end (as `head -1` does).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    login(LAB_PASSWORD);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"verdict\""), "{first}");
    drop(stdout);
    // Later handshakes find the pipe closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "watch went on tracing after its stdout was closed");
        login("not-the-password");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("Summary: "), "no summary on stderr: {rest}");
    assert!(!rest.to_lowercase().contains("broken pipe") && !rest.contains("error:"), "{rest}");
}

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    /// The pane's rows as shown (`-J` off), or with wrapped rows joined (`-J`).
    fn capture(&self, joined: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "watch", "-S", "-"];
        if joined {
            args.push("-J");
        }
        String::from_utf8_lossy(&self.cmd(&args).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn watch_in_an_80_column_terminal_wraps_no_line() {
    let Some(bin) = ready("watch_in_an_80_column_terminal_wraps_no_line") else { return };
    if !Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        skip("watch_in_an_80_column_terminal_wraps_no_line", "tmux is not installed (`cargo xtask setup` installs it)");
        return;
    }
    watch_in_tmux_at_80_columns(&bin, "socket");
    watch_in_tmux_at_80_columns(&bin, "syscalls");
}

/// `watch --capture TIER` in an 80x24 tmux window against a real MariaDB: every
/// handshake in columns, nothing wrapped. Both tiers show the Unix-socket login, its
/// client named by program and pid (`mariadb[PID]`).
fn watch_in_tmux_at_80_columns(bin: &std::path::Path, tier: &str) {
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let dir = std::env::temp_dir().join(format!("handshake-trace-tmux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tmux.conf");
    std::fs::write(&conf, "set -g history-limit 100000\n").unwrap();
    let tmux = Tmux { socket: format!("handshake-trace-test-{}", std::process::id()) };
    // stdout and stderr both on the terminal, as a user runs it; NO_COLOR off, TERM known.
    let run = format!("env -u COLUMNS -u NO_COLOR {} watch --capture {tier} -p {}; echo WATCH-EXITED $?; sleep 600", bin.display(), db.pid());
    let out = Command::new("tmux")
        .args(["-L", &tmux.socket, "-f"])
        .arg(&conf)
        .args(["new-session", "-d", "-s", "watch", "-x", "80", "-y", "24", &run])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(30), || tmux.capture(false).contains("Tracing MySQL handshakes")), "{}", tmux.capture(false));

    // A login, a wrong password, a login over the Unix socket, a silent client.
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let wrong = db.client(LAB_USER, "not-the-password", &["-e", "SELECT 1"]).unwrap();
    assert!(!wrong.status.success());
    let unix = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", db.socket().display()))
        .args(["-u", LAB_USER, &format!("--password={LAB_PASSWORD}"), "-e", "SELECT 1"])
        .output()
        .unwrap();
    assert!(unix.status.success(), "{}", String::from_utf8_lossy(&unix.stderr));
    let mut silent = std::net::TcpStream::connect(db.addr()).unwrap();
    read_greeting(&mut silent);
    // The server gives up after connect_timeout (2 s).
    std::thread::sleep(Duration::from_millis(3000));
    drop(silent);
    tmux.cmd(&["send-keys", "-t", "watch", "C-c"]);
    assert!(eventually(Duration::from_secs(20), || tmux.capture(false).contains("WATCH-EXITED 0")), "{}", tmux.capture(false));

    let rows = tmux.capture(false);
    let joined = tmux.capture(true);
    let _ = std::fs::remove_dir_all(&dir);
    // Every handshake is there, in columns under the header row.
    assert!(rows.lines().any(|l| l.starts_with("TIME ") && l.contains(" VERDICT ") && l.contains(" DETAIL")), "{rows}");
    // A handshake's line starts with its time (the summary's grouped table names verdicts too).
    let is_time = |t: &str| t.len() == 12 && t.as_bytes()[2] == b':' && t.as_bytes()[8] == b'.';
    let verdict_lines = |v: &str| {
        rows.lines().filter(|l| l.split_whitespace().next().is_some_and(is_time) && l.split_whitespace().nth(1) == Some(v)).count()
    };
    assert_eq!(verdict_lines("AUTH_FAILED"), 1, "{tier}: {rows}");
    assert_eq!(verdict_lines("SERVER_TIMEOUT"), 1, "{tier}: {rows}");
    if tier == "socket" {
        assert_eq!(verdict_lines("ok"), 2, "the TCP and the Unix-socket login:\n{rows}");
        assert!(rows.contains("mariadb["), "the Unix-socket client named by its program and pid:\n{rows}");
        assert!(!rows.contains("Unix-socket clients"), "the socket tier follows the Unix socket: no warning:\n{rows}");
    } else {
        assert_eq!(verdict_lines("ok"), 2, "the TCP and the Unix-socket login:\n{rows}");
        assert!(rows.contains("mariadb["), "the Unix-socket client named by its program and pid:\n{rows}");
    }
    assert!(rows.contains("latency (ms)") && rows.contains("Events: "), "the summary is on the terminal too:\n{rows}");
    // Nothing wrapped: joining wrapped rows changes nothing, and no row fills the last column.
    let rows: Vec<&str> = rows.lines().map(str::trim_end).collect();
    let joined: Vec<&str> = joined.lines().map(str::trim_end).collect();
    assert_eq!(rows.len(), joined.len(), "some lines wrapped:\n{}", joined.iter().filter(|l| l.chars().count() >= 80).copied().collect::<Vec<_>>().join("\n"));
    for l in &rows {
        assert!(l.chars().count() < 80, "{} columns: {l}", l.chars().count());
    }
}

#[test]
fn out_of_range_values_get_clear_errors() {
    let Some(bin) = ready("out_of_range_values_get_clear_errors") else { return };
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    for (args, says) in [
        (&["lab-server", "--connect-timeout", "18446744073709551615"][..], "31536000"),
        (&["watch", "--ringbuf-kb", "10000000"], "1048576"),
        (&["watch", "--ringbuf-kb", "0"], "4.."),
        (&["record", "-o", "/nonexistent/x", "--ringbuf-kb", "3"], "4.."),
        (&["watch", "--slow", "NaN"], "not a finite number"),
        (&["watch", "--slow=-1"], "not a finite number"),
        (&["watch", "--port", "0"], "1.."),
        (&["analyze", "--port", "0", "x.htrace"], "1.."),
        (&["agent", "--port", "0"], "1.."),
        (&["agent", "--log-rate", "inf"], "not a finite number"),
        (&["agent", "--top-window", "18446744073709551615"], "31536000"),
        (&["agent", "--top-window", "0"], "1.."),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Past the kernel's target map: the limit named, before any map is touched.
    let pids: Vec<String> = (1..=257).map(|p| p.to_string()).collect();
    let (code, err) = run(&["watch", "-p", &pids.join(",")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("257 processes: at most 256"), "{err}");
}

#[test]
fn record_refuses_an_existing_file_and_symbolic_links() {
    let Some(bin) = ready("record_refuses_an_existing_file_and_symbolic_links") else { return };
    let dir = std::env::temp_dir().join(format!("ht-cli-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("old.htrace");
    std::fs::write(&old, "keep me").unwrap();
    let target = dir.join("passwd");
    std::fs::write(&target, "precious").unwrap();
    let link = dir.join("link.htrace");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run(&["record", "-o", old.to_str().unwrap(), "-d", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("exists: not overwritten (--force replaces it)"), "{err}");
    for force in [&[][..], &["--force"]] {
        let mut args = vec!["record", "-o", link.to_str().unwrap(), "-d", "1"];
        args.extend_from_slice(force);
        let (code, err) = run(&args);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("is a symbolic link: not followed"), "{force:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `watch --brief` in a tmux window `width` columns wide against `db` while a mix runs: a
/// login, a wrong password, three port checks (connect, read the greeting, close), a
/// silent client; the pane's rows after Ctrl-C.
fn brief_in_tmux(bin: &std::path::Path, db: &MariaDb, width: u16) -> String {
    let dir = std::env::temp_dir().join(format!("handshake-trace-tmux-brief-{}-{width}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tmux.conf");
    std::fs::write(&conf, "set -g history-limit 100000\n").unwrap();
    let tmux = Tmux { socket: format!("handshake-trace-brief-{}-{width}", std::process::id()) };
    let run = format!("env -u COLUMNS -u NO_COLOR {} watch --brief -p {}; echo WATCH-EXITED $?; sleep 600", bin.display(), db.pid());
    let out = Command::new("tmux")
        .args(["-L", &tmux.socket, "-f"])
        .arg(&conf)
        .args(["new-session", "-d", "-s", "watch", "-x", &width.to_string(), "-y", "40", &run])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(30), || tmux.capture(false).contains("Tracing MySQL handshakes")), "{}", tmux.capture(false));
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let wrong = db.client(LAB_USER, "not-the-password", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(!wrong.status.success());
    for _ in 0..3 {
        let mut check = std::net::TcpStream::connect(db.addr()).unwrap();
        read_greeting(&mut check);
    }
    let mut silent = std::net::TcpStream::connect(db.addr()).unwrap();
    read_greeting(&mut silent);
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server gives up after connect_timeout (2 s) and closes.
    let _ = std::io::Read::read_to_end(&mut silent, &mut Vec::new());
    drop(silent);
    std::thread::sleep(Duration::from_millis(500));
    tmux.cmd(&["send-keys", "-t", "watch", "C-c"]);
    assert!(eventually(Duration::from_secs(20), || tmux.capture(false).contains("WATCH-EXITED 0")), "{}", tmux.capture(false));
    let rows = tmux.capture(false);
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

/// DETAIL leads with the cause: the reason in a few words and the blame first (whole at
/// any width: at 80 columns the reason gives way), who and where last; port checks are
/// one line and a fold whose count is on its own row in the columns.
#[test]
fn brief_lines_lead_with_the_cause_and_blame_at_80_120_and_200_columns() {
    let test = "brief_lines_lead_with_the_cause_and_blame_at_80_120_and_200_columns";
    let Some(bin) = ready(test) else { return };
    if !Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return skip(test, "tmux is not installed (`cargo xtask setup` installs it)");
    }
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let server = format!("→ {}", db.addr());
    for width in [80u16, 120, 200] {
        let rows = brief_in_tmux(&bin, &db, width);
        eprintln!("--- watch --brief at {width} columns ---\n{rows}");
        let is_time = |t: &str| t.len() == 12 && t.as_bytes()[2] == b':' && t.as_bytes()[8] == b'.';
        let lines: Vec<&str> =
            rows.lines().map(|l| l.strip_prefix("^C").unwrap_or(l)).filter(|l| l.split_whitespace().next().is_some_and(is_time)).collect();
        let of = |v: &str| lines.iter().copied().filter(|l| l.split_whitespace().nth(1) == Some(v)).collect::<Vec<&str>>();
        // The tty echoes Ctrl-C as "^C" before what the tracer prints at exit: not ours.
        for l in rows.lines().map(|l| l.strip_prefix("^C").unwrap_or(l)) {
            assert!(l.trim_end().chars().count() < width as usize, "{} columns at {width}: {l}", l.trim_end().chars().count());
        }
        // The wrong password: its ERR and its blame, at every width.
        let refused = of("auth_failed");
        assert_eq!(refused.len(), 1, "{rows}");
        let blame_at = |l: &str, party: &str| l.find(&format!("[blame: {party}]")).or_else(|| l.find(&format!("[{party}]")));
        assert!(refused[0].contains("ERR 1045"), "{width}: {}", refused[0]);
        assert!(blame_at(refused[0], "client").is_some(), "the blame at {width} columns: {}", refused[0]);
        // The silent client: a server timeout, the client's side.
        let timeout = of("server_timeout");
        assert_eq!(timeout.len(), 1, "{rows}");
        assert!(blame_at(timeout[0], "client").is_some(), "the blame at {width} columns: {}", timeout[0]);
        // Three port checks: the first a line, the rest a fold whose count is on its row.
        let checks = of("client_closed").into_iter().chain(of("client_reset")).collect::<Vec<&str>>();
        assert_eq!(checks.len(), 2, "a port check's line and its fold: {rows}");
        assert!(checks.iter().any(|l| l.contains("×3")), "{rows}");
        assert!(checks.iter().all(|l| blame_at(l, "client").is_some()), "{rows}");
        let kind = if width == 80 { "port chk" } else { "port check" };
        assert!(checks.iter().any(|l| l.contains(kind)), "{rows}");
        assert!(!rows.contains("folded"), "{rows}");
        // Where comes last: after the blame, whole at 200 columns, cut first at 80.
        if width == 200 {
            let at = refused[0].find(&server).unwrap_or_else(|| panic!("{server} not in {}", refused[0]));
            assert!(blame_at(refused[0], "client").unwrap() < at, "{}", refused[0]);
            assert!(refused[0].contains("[blame: client]") && refused[0].contains("ER_ACCESS_DENIED_ERROR"), "{}", refused[0]);
        }
        if width == 80 {
            assert!(refused[0].contains("ERR 1045 [client]"), "{}", refused[0]);
        }
        assert_eq!(of("ok").len(), 1, "{rows}");
    }
}

//! A throwaway MariaDB server for the lab and the tests: its own datadir, port
//! and socket under a temporary directory, loopback only, stopped and removed on drop.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// The account the lab's clients log in with.
pub const LAB_USER: &str = "lab";
/// Its password (a lab secret: it never appears in handshake-trace output).
pub const LAB_PASSWORD: &str = "lab-password";

#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// 0 = pick a free loopback port.
    pub port: u16,
    /// Seconds; the server's `connect_timeout`.
    pub connect_timeout: u32,
    pub max_connections: Option<u32>,
    /// Enable TLS with a throwaway self-signed certificate (needs `openssl`).
    pub tls: bool,
    /// More `mariadbd` options.
    pub extra_args: Vec<String>,
    /// A cgroup v2 directory the server joins before it starts (as a systemd service
    /// does): see [`crate::cgroup::Cgroup`]. None: the caller's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Start the server with `--defaults-file=` this option file instead of `--no-defaults`.
    pub defaults_file: Option<PathBuf>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        Self { port: 0, connect_timeout: 10, max_connections: None, tls: false, extra_args: Vec::new(), cgroup: None, defaults_file: None }
    }
}

pub struct MariaDb {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
    /// How the server was started (binary, arguments, cgroup), for [`MariaDb::restart`].
    launch: Option<(PathBuf, Vec<std::ffi::OsString>, Option<PathBuf>)>,
    /// Made for this server by [`MariaDb::start_in`]: removed after it stopped.
    _cgroup: Option<crate::cgroup::Cgroup>,
}

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let dirs = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin"];
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| Path::new(d).join(n)))
        .find(|p| p.is_file())
}

/// True when a MariaDB server and client are installed.
pub fn installed() -> bool {
    find_binary(&["mariadbd"]).is_some() && find_binary(&["mariadb"]).is_some()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn unique_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let dir = std::env::temp_dir().join(format!("handshake-trace-mariadb-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl MariaDb {
    /// Initialise a datadir and start `mariadbd` on it; returns once it accepts logins.
    pub fn start(opts: &MariaDbOptions) -> Result<Self> {
        let server = find_binary(&["mariadbd", "mysqld"])
            .context("no mariadbd found: install MariaDB (apt-get install mariadb-server mariadb-client)")?;
        let install = find_binary(&["mariadb-install-db", "mysql_install_db"])
            .context("no mariadb-install-db found (package mariadb-server)")?;
        let dir = unique_dir()?;
        let data = dir.join("data");
        let port = if opts.port == 0 { free_port()? } else { opts.port };
        let mut db = MariaDb { dir: dir.clone(), child: None, port, launch: None, _cgroup: None };
        // Temporary tables in the instance's own folder, not the shared /tmp: servers
        // bootstrapping at once on one machine (parallel test runs) stayed out of each
        // other's way only by chance there.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).context("create the server's tmpdir")?;

        let out = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"])
            .output()
            .context("run mariadb-install-db")?;
        if !out.status.success() {
            bail!("mariadb-install-db failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }

        let mut cmd = Command::new(&server);
        match &opts.defaults_file {
            Some(f) => cmd.arg(format!("--defaults-file={}", f.display())),
            None => cmd.arg("--no-defaults"),
        };
        cmd.arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", db.socket().display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", db.error_log().display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--user=root")
            .arg(format!("--connect-timeout={}", opts.connect_timeout))
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=32M", "--log-warnings=2"]);
        if let Some(n) = opts.max_connections {
            cmd.arg(format!("--max-connections={n}"));
        }
        if opts.tls {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .context("run openssl to make a test certificate")?;
            if !out.status.success() {
                bail!("openssl failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            cmd.arg(format!("--ssl-cert={}", cert.display())).arg(format!("--ssl-key={}", key.display()));
        }
        cmd.args(&opts.extra_args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        db.launch = Some((server.clone(), cmd.get_args().map(Into::into).collect(), opts.cgroup.clone()));
        if let Some(dir) = &opts.cgroup {
            crate::cgroup::spawn_into(&mut cmd, dir)?;
        }
        db.child = Some(cmd.spawn().context("start mariadbd")?);
        db.wait_ready()?;
        db.sql(&format!(
            "DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES; \
             CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; CREATE USER '{u}'@'localhost' IDENTIFIED BY '{p}'; \
             GRANT ALL ON *.* TO '{u}'@'%'; GRANT ALL ON *.* TO '{u}'@'localhost';",
            u = LAB_USER,
            p = LAB_PASSWORD
        ))?;
        Ok(db)
    }

    /// [`MariaDb::start`] in `cgroup`, which goes with the server (after it stopped).
    pub fn start_in(opts: &MariaDbOptions, cgroup: crate::cgroup::Cgroup) -> Result<Self> {
        let mut db = Self::start(&MariaDbOptions { cgroup: Some(cgroup.dir().into()), ..opts.clone() })?;
        db._cgroup = Some(cgroup);
        Ok(db)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("mariadbd exited ({status}) while starting:\n{}", self.error_log_tail());
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                && self.sql("SELECT 1").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("mariadbd did not accept logins within 60 s:\n{}", self.error_log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mariadbd.sock")
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    pub fn error_log_tail(&self) -> String {
        let text = fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Run SQL as root over the Unix socket (not traced: the tracer watches TCP accepts);
    /// returns the tab-separated result without headers.
    pub fn sql(&self, query: &str) -> Result<String> {
        let client = find_binary(&["mariadb", "mysql"]).context("no mariadb client found")?;
        let out = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", query])
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// A global status counter such as `Aborted_connects`.
    pub fn status(&self, name: &str) -> Result<u64> {
        let row = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))?;
        let value = row.split('\t').nth(1).with_context(|| format!("no status {name}"))?;
        Ok(value.trim().parse()?)
    }

    /// Run the `mariadb` CLI against the server over TCP on loopback.
    pub fn client(&self, user: &str, password: &str, args: &[&str]) -> Result<Output> {
        let client = find_binary(&["mariadb", "mysql"]).context("no mariadb client found")?;
        Ok(Command::new(client)
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-u", user])
            .arg(format!("--password={password}"))
            .args(["-N", "-B", "--connect-timeout=10"])
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Restart the server as a service manager does: SIGTERM, wait for it to exit, then
    /// the same binary with the same options (datadir, port, cgroup) again; returns once
    /// it accepts logins. Returns the time the new process was started.
    pub fn restart(&mut self) -> Result<Instant> {
        self.terminate();
        let (bin, args, cgroup) = self.launch.clone().context("no launch command kept")?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(dir) = &cgroup {
            crate::cgroup::spawn_into(&mut cmd, dir)?;
        }
        let started = Instant::now();
        self.child = Some(cmd.spawn().context("start mariadbd again")?);
        self.wait_ready()?;
        Ok(started)
    }

    /// SIGTERM, then SIGKILL after 20 s; waits for the exit.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stop the server (SIGTERM, then SIGKILL after 20 s) and remove its directory.
    pub fn stop(&mut self) {
        self.terminate();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

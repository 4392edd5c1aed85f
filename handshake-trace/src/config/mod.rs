//! The server's own configuration, as far as the handshake's verdicts depend on it:
//! `connect_timeout` (how long it waits for each packet of the handshake),
//! `max_connect_errors` (handshake errors from a host before it is blocked, ERR 1129),
//! `skip-name-resolve` (no reverse DNS, no host cache) and `proxy-protocol-networks`,
//! each with where it came from. Found as the server finds them: its option files in
//! MariaDB's order, then its command line (which wins). Pure: the command line, the
//! environment and the files' text come from the caller through [`OptionSource`]
//! (live: `capture/server_config.rs`, which reads /proc with bounds and trust checks).
//! No words here: `output` says these in English.
mod parse;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

pub use parse::{major_minor as parse_major_minor, parse_command_line, parse_line, CommandLine, Line};

/// MariaDB 10.11's default `connect_timeout`, seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 10;
/// MariaDB 10.11's default `max_connect_errors`.
pub const DEFAULT_MAX_CONNECT_ERRORS: u64 = 100;
/// The server raises a smaller `connect_timeout` to this (its lower bound).
pub const MIN_CONNECT_TIMEOUT_S: u64 = 2;
/// `connect_timeout`'s upper bound (a year).
pub const MAX_CONNECT_TIMEOUT_S: u64 = 31_536_000;
/// `max_connect_errors`' upper bound.
pub const MAX_MAX_CONNECT_ERRORS: u64 = u32::MAX as u64;

/// Option files read at most for one server (includes counted).
pub const MAX_FILES: usize = 64;
/// `!include` nesting followed at most (MariaDB's own limit is 10).
pub const MAX_DEPTH: usize = 10;
/// Files of one `!includedir` read at most.
pub const MAX_DIR_ENTRIES: usize = 256;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not set anywhere: the server's compiled-in default (MariaDB 10.11's).
    Default,
    /// The server's command line (/proc/PID/cmdline).
    CommandLine,
    /// An option file, at this line.
    File { path: String, line: u32 },
    /// The tracer's own flag (`--connect-timeout`, `--max-connect-errors`): the
    /// operator's word, over what the files say.
    Flag,
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
    /// The server does not take the value as written: it raises or lowers it into
    /// the option's range (as `connect_timeout=1` becomes 2).
    pub adjusted: bool,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting { value, source: Source::Default, adjusted: false }
    }
}

/// Why an option file was not read (or not whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a regular file (a FIFO, a device, a directory named as a file).
    NotRegular,
    /// Larger than the tracer reads.
    TooLarge,
    /// The server's user could not read it, and no one the tracer trusts (root)
    /// named it: reading it as root could leak what the server cannot see.
    NotTrusted,
    /// A relative path (the server resolves it from its own working directory).
    Relative,
    /// More than [`MAX_DEPTH`] includes deep.
    TooDeep,
    /// More than [`MAX_FILES`] files, or [`MAX_DIR_ENTRIES`] in one directory.
    TooMany,
    /// Not valid UTF-8.
    NotText,
    /// Any other error opening or reading it (errno).
    Io(i32),
}

/// What happened to one option file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    Read,
    /// Not there: the usual case for most of the default places.
    Missing,
    Refused(Refusal),
}

/// One option file the server would read, and what the tracer made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub path: String,
    pub outcome: FileOutcome,
}

/// An option file's text, and whether the paths it includes may be read on its word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileText {
    pub text: String,
    /// Only root could have written it (owned by root, not writable by group or
    /// others): the files it includes were chosen by root.
    pub root_written: bool,
}

/// Where the option files come from: live, the server's root through /proc; in
/// tests, memory.
pub trait OptionSource {
    /// The text of the option file at `path` (absolute, in the server's filesystem).
    /// `root_named`: root chose this path (a fixed default place, or an include in a
    /// file only root could write). `Ok(None)`: no such file.
    fn read(&mut self, path: &str, root_named: bool) -> Result<Option<FileText>, Refusal>;
    /// The names of the entries of the directory `dir` (unsorted); `Ok(None)`: no such directory.
    fn list(&mut self, dir: &str, root_named: bool) -> Result<Option<Vec<String>>, Refusal>;
    /// The server's version (major, minor), for the `[mariadb-10.11]` groups; asked
    /// only when a file has such a group.
    fn version(&mut self) -> Option<(u32, u32)>;
}

/// What the server's process says of itself: its arguments and the environment
/// variables that move option files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// argv, the program name first.
    pub args: Vec<String>,
    /// $HOME: where `~/.my.cnf` is (none: not read, as the server does).
    pub home: Option<String>,
    /// $MARIADB_HOME, else $MYSQL_HOME: a directory whose my.cnf is read after /etc's.
    pub mariadb_home: Option<String>,
    /// $MYSQL_GROUP_SUFFIX: like --defaults-group-suffix.
    pub group_suffix: Option<String>,
    /// The server runs as root: every path it names was named by root.
    pub runs_as_root: bool,
}

/// The tracer's flags over what the server's files say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub connect_timeout_s: Option<u64>,
    pub max_connect_errors: Option<u64>,
}

/// The settings the verdicts depend on, each with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub connect_timeout_s: Setting<u64>,
    pub max_connect_errors: Setting<u64>,
    pub skip_name_resolve: Setting<bool>,
    /// None: not set (the server accepts no PROXY header).
    pub proxy_protocol_networks: Setting<Option<String>>,
    /// The option files in the order the server reads them, and what became of each.
    pub files: Vec<FileRead>,
    /// `--no-defaults`: no option file is read.
    pub no_defaults: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connect_timeout_s: Setting::default(DEFAULT_CONNECT_TIMEOUT_S),
            max_connect_errors: Setting::default(DEFAULT_MAX_CONNECT_ERRORS),
            skip_name_resolve: Setting::default(false),
            proxy_protocol_networks: Setting::default(None),
            files: Vec::new(),
            no_defaults: false,
        }
    }
}

impl ServerConfig {
    /// The defaults, with the tracer's flags on top (`analyze`: no server to read).
    pub fn from_overrides(o: Overrides) -> Self {
        ServerConfig::default().with_overrides(o)
    }

    /// The tracer's flags win over the files and the command line.
    pub fn with_overrides(mut self, o: Overrides) -> Self {
        if let Some(s) = o.connect_timeout_s {
            self.connect_timeout_s = Setting { value: s, source: Source::Flag, adjusted: false };
        }
        if let Some(n) = o.max_connect_errors {
            self.max_connect_errors = Setting { value: n, source: Source::Flag, adjusted: false };
        }
        self
    }

    /// Files the tracer would have read but did not (refused), for a notice.
    pub fn refused(&self) -> impl Iterator<Item = (&str, Refusal)> {
        self.files.iter().filter_map(|f| match f.outcome {
            FileOutcome::Refused(r) => Some((f.path.as_str(), r)),
            _ => None,
        })
    }

    /// Assign one option (name as written, prefixes and all). Unknown names and
    /// values the server would refuse leave the setting as it was.
    fn assign(&mut self, name: &str, value: Option<&str>, source: &Source) {
        let Some(option) = parse::option(name, value) else { return };
        match option {
            parse::Known::ConnectTimeout(n) => {
                let v = n.clamp(MIN_CONNECT_TIMEOUT_S, MAX_CONNECT_TIMEOUT_S);
                self.connect_timeout_s = Setting { value: v, source: source.clone(), adjusted: v != n };
            }
            parse::Known::MaxConnectErrors(n) => {
                let v = n.clamp(1, MAX_MAX_CONNECT_ERRORS);
                self.max_connect_errors = Setting { value: v, source: source.clone(), adjusted: v != n };
            }
            parse::Known::SkipNameResolve(b) => {
                self.skip_name_resolve = Setting { value: b, source: source.clone(), adjusted: false };
            }
            parse::Known::ProxyProtocolNetworks(s) => {
                let v = (!s.is_empty()).then_some(s);
                self.proxy_protocol_networks = Setting { value: v, source: source.clone(), adjusted: false };
            }
        }
    }
}

/// The server's configuration as it read it at start: its option files in MariaDB's
/// order (`/etc/my.cnf`, `/etc/mysql/my.cnf`, `$MARIADB_HOME/my.cnf`,
/// `--defaults-extra-file`, `~/.my.cnf`; only `--defaults-file` when given; none with
/// `--no-defaults`), each option in the groups a MariaDB server reads, later ones
/// winning; then its command line, which wins over every file; then the tracer's flags.
pub fn resolve(process: &Process, files: &mut dyn OptionSource, overrides: Overrides) -> ServerConfig {
    let cmd = parse_command_line(&process.args);
    let mut cfg = ServerConfig { no_defaults: cmd.no_defaults, ..ServerConfig::default() };
    let suffix = cmd.group_suffix.clone().or_else(|| process.group_suffix.clone());
    if !cmd.no_defaults {
        let mut walk = Walk { files, cfg: &mut cfg, suffix: suffix.as_deref(), version: None, opened: 0 };
        let root = process.runs_as_root;
        match &cmd.defaults_file {
            Some(path) => walk.file(path, root, 0),
            None => {
                walk.file("/etc/my.cnf", true, 0);
                walk.file("/etc/mysql/my.cnf", true, 0);
                if let Some(dir) = &process.mariadb_home {
                    walk.file(&join(dir, "my.cnf"), root, 0);
                }
                if let Some(extra) = &cmd.defaults_extra_file {
                    walk.file(extra, root, 0);
                }
                if let Some(home) = &process.home {
                    walk.file(&join(home, ".my.cnf"), root, 0);
                }
            }
        }
    }
    for (name, value) in &cmd.options {
        cfg.assign(name, value.as_deref(), &Source::CommandLine);
    }
    cfg.with_overrides(overrides)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// Reading the option files, includes and all, within the bounds.
struct Walk<'a> {
    files: &'a mut dyn OptionSource,
    cfg: &'a mut ServerConfig,
    suffix: Option<&'a str>,
    /// Asked of the source once, when a group needs it.
    version: Option<Option<(u32, u32)>>,
    opened: usize,
}

impl Walk<'_> {
    fn note(&mut self, path: &str, outcome: FileOutcome) {
        // The list itself is bounded: past the bound only the refusal of the next is kept.
        if self.cfg.files.len() <= MAX_FILES + MAX_DIR_ENTRIES {
            self.cfg.files.push(FileRead { path: path.to_string(), outcome });
        }
    }

    fn file(&mut self, path: &str, root_named: bool, depth: usize) {
        if !path.starts_with('/') {
            return self.note(path, FileOutcome::Refused(Refusal::Relative));
        }
        if depth > MAX_DEPTH {
            return self.note(path, FileOutcome::Refused(Refusal::TooDeep));
        }
        if self.opened >= MAX_FILES {
            return self.note(path, FileOutcome::Refused(Refusal::TooMany));
        }
        self.opened += 1;
        let text = match self.files.read(path, root_named) {
            Ok(Some(t)) => t,
            Ok(None) => return self.note(path, FileOutcome::Missing),
            Err(r) => return self.note(path, FileOutcome::Refused(r)),
        };
        self.note(path, FileOutcome::Read);
        // Options count only inside a group the server reads; includes count anywhere.
        let mut in_group = false;
        for (i, raw) in text.text.lines().enumerate() {
            match parse_line(raw) {
                Line::Group(g) => in_group = self.reads_group(g),
                Line::Option { name, value } if in_group => {
                    let source = Source::File { path: path.to_string(), line: (i + 1) as u32 };
                    self.cfg.assign(name, value.as_deref(), &source);
                }
                Line::Include(p) => self.file(p, text.root_written, depth + 1),
                Line::IncludeDir(d) => self.dir(d, text.root_written, depth + 1),
                _ => {}
            }
        }
    }

    /// `!includedir`: its `.cnf` files, in name order.
    fn dir(&mut self, dir: &str, root_named: bool, depth: usize) {
        if !dir.starts_with('/') {
            return self.note(dir, FileOutcome::Refused(Refusal::Relative));
        }
        if depth > MAX_DEPTH {
            return self.note(dir, FileOutcome::Refused(Refusal::TooDeep));
        }
        let mut names = match self.files.list(dir, root_named) {
            Ok(Some(n)) => n,
            Ok(None) => return self.note(dir, FileOutcome::Missing),
            Err(r) => return self.note(dir, FileOutcome::Refused(r)),
        };
        names.retain(|n| n.ends_with(".cnf") && !n.contains('/'));
        names.sort();
        if names.len() > MAX_DIR_ENTRIES {
            self.note(dir, FileOutcome::Refused(Refusal::TooMany));
            names.truncate(MAX_DIR_ENTRIES);
        }
        for n in names {
            self.file(&join(dir, &n), root_named, depth);
        }
    }

    /// The groups a MariaDB server reads: `[mysqld]`, `[server]`, `[mariadb]`,
    /// `[mariadbd]`, `[client-server]`, `[galera]`, the version's `[mysqld-10.11]`,
    /// `[mariadb-10.11]`, `[mariadbd-10.11]`, and each of them with the group suffix.
    fn reads_group(&mut self, group: &str) -> bool {
        let base = match self.suffix {
            Some(s) if !s.is_empty() => group.strip_suffix(s).filter(|b| !b.is_empty()).unwrap_or(group),
            _ => group,
        };
        if SERVER_GROUPS.iter().any(|g| g.eq_ignore_ascii_case(base)) {
            return true;
        }
        let Some((name, version)) = base.rsplit_once('-') else { return false };
        if !VERSIONED_GROUPS.iter().any(|g| g.eq_ignore_ascii_case(name)) {
            return false;
        }
        let Some(wanted) = parse::major_minor(version) else { return false };
        if self.version.is_none() {
            self.version = Some(self.files.version());
        }
        self.version.flatten() == Some(wanted)
    }
}

/// The groups every MariaDB server reads (`mariadbd --help --verbose` lists them).
pub const SERVER_GROUPS: &[&str] = &["mysqld", "server", "mariadb", "mariadbd", "client-server", "galera"];
/// The groups read with the server's `-MAJOR.MINOR` after them.
pub const VERSIONED_GROUPS: &[&str] = &["mysqld", "mariadb", "mariadbd"];

/// Whether the server may have looked up this client's name before its greeting
/// (and kept its errors in the host cache), and if not, why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameLookup {
    /// It may have: a TCP client from another address than 127.0.0.1 or ::1, and no
    /// `skip-name-resolve` known.
    Possible,
    /// The server runs with `skip-name-resolve`: no reverse DNS, no host cache.
    SkippedByConfig,
    /// 127.0.0.1 or ::1: the server names it localhost without asking, and keeps no
    /// host cache entry for it.
    Loopback,
    /// A Unix-socket client: no address to look up.
    UnixSocket,
}

/// Whether name resolution (and the host cache) applies to this client of this server.
/// Without the server's configuration (a server not named mysqld/mariadbd, a replay)
/// nothing is ruled out but for Unix sockets: the rules below are MariaDB's and MySQL's.
pub fn name_lookup(client: Option<SocketAddr>, unix: bool, cfg: Option<&ServerConfig>) -> NameLookup {
    if unix {
        return NameLookup::UnixSocket;
    }
    let Some(cfg) = cfg else { return NameLookup::Possible };
    if cfg.skip_name_resolve.value {
        return NameLookup::SkippedByConfig;
    }
    match client.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) if v4 == std::net::Ipv4Addr::LOCALHOST => NameLookup::Loopback,
        Some(IpAddr::V6(v6)) if v6 == std::net::Ipv6Addr::LOCALHOST => NameLookup::Loopback,
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST) => NameLookup::Loopback,
        _ => NameLookup::Possible,
    }
}

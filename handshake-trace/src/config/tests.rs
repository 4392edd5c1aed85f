use std::collections::HashMap;

use super::*;

/// Option files in memory: path → (text, written by root only). Directories are the
/// paths' parents. Records what was asked for and with which trust.
#[derive(Default)]
struct Files {
    files: HashMap<String, (String, bool)>,
    refused: HashMap<String, Refusal>,
    asked: Vec<(String, bool)>,
    version: Option<(u32, u32)>,
    version_asked: u32,
}

impl Files {
    fn with(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.into(), (text.into(), true));
        self
    }
    fn user_written(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.into(), (text.into(), false));
        self
    }
}

impl OptionSource for Files {
    fn read(&mut self, path: &str, root_named: bool) -> Result<Option<FileText>, Refusal> {
        self.asked.push((path.into(), root_named));
        if let Some(r) = self.refused.get(path) {
            return Err(*r);
        }
        Ok(self.files.get(path).map(|(t, root)| FileText { text: t.clone(), root_written: *root }))
    }
    fn list(&mut self, dir: &str, _root_named: bool) -> Result<Option<Vec<String>>, Refusal> {
        let prefix = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        let names: Vec<String> = self.files.keys().filter_map(|p| p.strip_prefix(&prefix)).filter(|n| !n.contains('/')).map(String::from).collect();
        Ok((!names.is_empty()).then_some(names))
    }
    fn version(&mut self) -> Option<(u32, u32)> {
        self.version_asked += 1;
        self.version
    }
}

fn args(a: &[&str]) -> Process {
    Process { args: a.iter().map(|s| s.to_string()).collect(), home: Some("/var/lib/mysql".into()), ..Process::default() }
}

fn resolved(p: &Process, files: &mut Files) -> ServerConfig {
    resolve(p, files, Overrides::default())
}

fn file(path: &str, line: u32) -> Source {
    Source::File { path: path.into(), line }
}

#[test]
fn nothing_set_gives_mariadb_10_11_defaults() {
    let c = resolved(&args(&["mariadbd"]), &mut Files::default());
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source.clone()), (10, Source::Default));
    assert_eq!((c.max_connect_errors.value, c.max_connect_errors.source.clone()), (100, Source::Default));
    assert!(!c.skip_name_resolve.value);
    assert_eq!(c.proxy_protocol_networks.value, None);
    let order: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(order, ["/etc/my.cnf", "/etc/mysql/my.cnf", "/var/lib/mysql/.my.cnf"]);
    assert!(c.files.iter().all(|f| f.outcome == FileOutcome::Missing));
}

#[test]
fn command_line_options_in_every_spelling() {
    for (argv, want) in [
        (&["mariadbd", "--connect-timeout=3"][..], 3),
        (&["mariadbd", "--connect_timeout=4"], 4),
        (&["mariadbd", "--connect-timeout", "5"], 5),
        (&["mariadbd", "--loose-connect-timeout=6"], 6),
        (&["mariadbd", "--loose_connect_timeout", "7"], 7),
        (&["mariadbd", "--connect-timeout=1K"], 1024),
    ] {
        let c = resolved(&args(argv), &mut Files::default());
        assert_eq!(c.connect_timeout_s.value, want, "{argv:?}");
        assert_eq!(c.connect_timeout_s.source, Source::CommandLine, "{argv:?}");
    }
    // Not ours, or not a value the server takes: the default stays.
    for argv in [&["mariadbd", "--connect-timeouts=3"][..], &["mariadbd", "--connect-timeout=abc"], &["mariadbd", "-connect-timeout=3"], &["mariadbd", "--", "--connect-timeout=3"]] {
        assert_eq!(resolved(&args(argv), &mut Files::default()).connect_timeout_s.source, Source::Default, "{argv:?}");
    }
}

#[test]
fn a_value_out_of_range_is_adjusted_as_the_server_does() {
    let c = resolved(&args(&["mariadbd", "--connect-timeout=1", "--max-connect-errors=0"]), &mut Files::default());
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.adjusted), (2, true));
    assert_eq!((c.max_connect_errors.value, c.max_connect_errors.adjusted), (1, true));
}

#[test]
fn skip_name_resolve_as_a_flag_a_value_and_a_prefix() {
    for (argv, want) in [
        (&["mariadbd", "--skip-name-resolve"][..], true),
        (&["mariadbd", "--skip_name_resolve"], true),
        (&["mariadbd", "--skip-name-resolve=1"], true),
        (&["mariadbd", "--skip-name-resolve=ON"], true),
        (&["mariadbd", "--skip-name-resolve=OFF"], false),
        (&["mariadbd", "--skip-name-resolve=0"], false),
        (&["mariadbd", "--skip-name-resolve", "--disable-skip-name-resolve"], false),
        (&["mariadbd", "--skip-name-resolve", "--skip-skip-name-resolve"], false),
        (&["mariadbd", "--enable-skip-name-resolve"], true),
        (&["mariadbd", "--loose-skip-name-resolve"], true),
    ] {
        let c = resolved(&args(argv), &mut Files::default());
        assert_eq!(c.skip_name_resolve.value, want, "{argv:?}");
        assert_eq!(c.skip_name_resolve.source, Source::CommandLine, "{argv:?}");
    }
    // A bool does not take the next argument as its value.
    let c = resolved(&args(&["mariadbd", "--skip-name-resolve", "0"]), &mut Files::default());
    assert!(c.skip_name_resolve.value);
}

#[test]
fn option_file_lines() {
    assert_eq!(parse_line("  [mysqld]  "), Line::Group("mysqld"));
    assert_eq!(parse_line("# connect_timeout=3"), Line::Blank);
    assert_eq!(parse_line("; connect_timeout=3"), Line::Blank);
    assert_eq!(parse_line("connect_timeout = 5  # five"), Line::Option { name: "connect_timeout", value: Some("5".into()) });
    assert_eq!(parse_line("proxy_protocol_networks = \"10.0.0.0/8, localhost\""), Line::Option {
        name: "proxy_protocol_networks",
        value: Some("10.0.0.0/8, localhost".into())
    });
    assert_eq!(parse_line("x = 'a#b' # c"), Line::Option { name: "x", value: Some("a#b".into()) });
    assert_eq!(parse_line("skip-name-resolve"), Line::Option { name: "skip-name-resolve", value: None });
    assert_eq!(parse_line("!includedir /etc/mysql/conf.d/"), Line::IncludeDir("/etc/mysql/conf.d/"));
    assert_eq!(parse_line("!include   /etc/x.cnf "), Line::Include("/etc/x.cnf"));
    assert_eq!(parse_line("!include"), Line::Invalid);
    assert_eq!(parse_line("[unclosed"), Line::Invalid);
}

#[test]
fn only_the_servers_groups_count() {
    let mut files = Files::default().with(
        "/etc/my.cnf",
        "connect_timeout=11\n[client]\nconnect_timeout=12\n[mysqld]\nconnect_timeout=13\n[mysqldump]\nmax_connect_errors=7\n",
    );
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source), (13, file("/etc/my.cnf", 5)));
    assert_eq!(c.max_connect_errors.source, Source::Default);
    for g in ["server", "mariadb", "mariadbd", "client-server", "galera", "MYSQLD"] {
        let mut files = Files::default().with("/etc/my.cnf", &format!("[{g}]\nmax_connect_errors=9\n"));
        assert_eq!(resolved(&args(&["mariadbd"]), &mut files).max_connect_errors.value, 9, "[{g}]");
    }
}

#[test]
fn later_files_and_lines_win_whatever_their_group() {
    let mut files = Files::default()
        .with("/etc/my.cnf", "[mariadb]\nconnect_timeout=3\n[mysqld]\nconnect_timeout=4\n")
        .with("/etc/mysql/my.cnf", "[server]\nconnect_timeout=5\n[client-server]\nmax_connect_errors=50\n");
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source), (5, file("/etc/mysql/my.cnf", 2)));
    assert_eq!(c.max_connect_errors.value, 50);
}

#[test]
fn the_command_line_wins_over_every_file_and_the_flag_over_both() {
    let mut files = Files::default().with("/etc/my.cnf", "[mysqld]\nconnect_timeout=4\nskip-name-resolve\nmax_connect_errors=5\n");
    let c = resolved(&args(&["mariadbd", "--connect-timeout=2", "--skip-name-resolve=OFF"]), &mut files);
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source.clone()), (2, Source::CommandLine));
    assert!(!c.skip_name_resolve.value);
    assert_eq!(c.max_connect_errors.source, file("/etc/my.cnf", 4));
    let o = Overrides { connect_timeout_s: Some(9), max_connect_errors: Some(3) };
    let c = resolve(&args(&["mariadbd", "--connect-timeout=2"]), &mut files, o);
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source), (9, Source::Flag));
    assert_eq!((c.max_connect_errors.value, c.max_connect_errors.source), (3, Source::Flag));
}

#[test]
fn includes_and_includedirs_are_read_in_place_in_name_order() {
    let mut files = Files::default()
        .with("/etc/mysql/my.cnf", "[client-server]\n!includedir /etc/mysql/conf.d/\n[mysqld]\nmax_connect_errors=20\n!include /etc/mysql/last.cnf\n")
        .with("/etc/mysql/conf.d/50-server.cnf", "[mysqld]\nconnect_timeout=7\nmax_connect_errors=30\n")
        .with("/etc/mysql/conf.d/10-first.cnf", "[mysqld]\nconnect_timeout=6\n")
        .with("/etc/mysql/conf.d/99-ignored.conf", "[mysqld]\nconnect_timeout=99\n")
        .with("/etc/mysql/last.cnf", "[galera]\nskip_name_resolve=1\n");
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!((c.connect_timeout_s.value, c.connect_timeout_s.source), (7, file("/etc/mysql/conf.d/50-server.cnf", 2)));
    // After the includedir, in the including file.
    assert_eq!((c.max_connect_errors.value, c.max_connect_errors.source), (20, file("/etc/mysql/my.cnf", 4)));
    assert_eq!(c.skip_name_resolve.source, file("/etc/mysql/last.cnf", 2));
    let read: Vec<&str> = c.files.iter().filter(|f| f.outcome == FileOutcome::Read).map(|f| f.path.as_str()).collect();
    assert_eq!(read, ["/etc/mysql/my.cnf", "/etc/mysql/conf.d/10-first.cnf", "/etc/mysql/conf.d/50-server.cnf", "/etc/mysql/last.cnf"]);
}

#[test]
fn an_include_is_trusted_only_from_a_file_only_root_could_write() {
    let mut files = Files::default()
        .with("/etc/my.cnf", "!include /etc/root.cnf\n")
        .user_written("/var/lib/mysql/.my.cnf", "!include /etc/planted.cnf\n");
    resolved(&args(&["mariadbd"]), &mut files);
    let trust: HashMap<&str, bool> = files.asked.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    assert!(trust["/etc/my.cnf"], "a fixed place: root's choice");
    assert!(trust["/etc/root.cnf"]);
    assert!(!trust["/var/lib/mysql/.my.cnf"], "$HOME comes from whoever started the server");
    assert!(!trust["/etc/planted.cnf"]);
}

#[test]
fn include_loops_and_depth_are_bounded() {
    let mut files = Files::default().with("/etc/my.cnf", "[mysqld]\nconnect_timeout=3\n!include /etc/my.cnf\n");
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!(c.connect_timeout_s.value, 3);
    assert!(files.asked.len() <= MAX_FILES, "{}", files.asked.len());
    assert!(c.files.iter().any(|f| f.outcome == FileOutcome::Refused(Refusal::TooDeep)));
    let mut files = Files::default().with("/etc/my.cnf", "!include etc/relative.cnf\n");
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert!(c.files.iter().any(|f| f.path == "etc/relative.cnf" && f.outcome == FileOutcome::Refused(Refusal::Relative)));
}

#[test]
fn defaults_file_reads_that_file_only_and_no_defaults_none() {
    let base = Files::default()
        .with("/etc/my.cnf", "[mysqld]\nconnect_timeout=3\n")
        .with("/srv/db.cnf", "[mysqld]\nmax_connect_errors=4\n")
        .with("/srv/extra.cnf", "[mysqld]\nconnect_timeout=5\n")
        .with("/var/lib/mysql/.my.cnf", "[mysqld]\nconnect_timeout=6\n");
    let mut files = Files { files: base.files.clone(), ..Files::default() };
    let c = resolved(&args(&["mariadbd", "--defaults-file=/srv/db.cnf", "--port=3306"]), &mut files);
    assert_eq!(c.max_connect_errors.value, 4);
    assert_eq!(c.connect_timeout_s.source, Source::Default);
    assert_eq!(files.asked.len(), 1);
    let mut files = Files { files: base.files.clone(), ..Files::default() };
    let c = resolved(&args(&["mariadbd", "--defaults-extra-file=/srv/extra.cnf"]), &mut files);
    // ~/.my.cnf comes after the extra file.
    assert_eq!(c.connect_timeout_s.value, 6);
    let paths: Vec<&str> = c.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/etc/my.cnf", "/etc/mysql/my.cnf", "/srv/extra.cnf", "/var/lib/mysql/.my.cnf"]);
    let mut files = Files { files: base.files.clone(), ..Files::default() };
    let c = resolved(&args(&["mariadbd", "--no-defaults", "--max-connect-errors=8"]), &mut files);
    assert!(files.asked.is_empty() && c.no_defaults);
    assert_eq!(c.max_connect_errors.value, 8);
    // Not at the start: the server does not take it as a file option.
    let mut files = Files { files: base.files, ..Files::default() };
    resolved(&args(&["mariadbd", "--port=3306", "--defaults-file=/srv/db.cnf"]), &mut files);
    assert!(files.asked.iter().any(|(p, _)| p == "/etc/my.cnf"));
}

#[test]
fn version_groups_need_the_servers_version_asked_once() {
    let text = "[mariadb-10.6]\nconnect_timeout=6\n[mariadb-10.11]\nconnect_timeout=11\n[mysqld-10.6]\nmax_connect_errors=6\n";
    let mut files = Files { version: Some((10, 11)), ..Files::default() }.with("/etc/my.cnf", text);
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!(c.connect_timeout_s.value, 11);
    assert_eq!(c.max_connect_errors.source, Source::Default);
    assert_eq!(files.version_asked, 1);
    let mut unknown = Files::default().with("/etc/my.cnf", text);
    assert_eq!(resolved(&args(&["mariadbd"]), &mut unknown).connect_timeout_s.source, Source::Default);
    let mut none = Files::default().with("/etc/my.cnf", "[mysqld]\nconnect_timeout=3\n");
    resolved(&args(&["mariadbd"]), &mut none);
    assert_eq!(none.version_asked, 0, "no version group: the binary is not looked at");
}

#[test]
fn the_group_suffix_adds_suffixed_groups() {
    let text = "[mysqld_a]\nconnect_timeout=3\n[mysqld_b]\nconnect_timeout=4\n";
    let mut files = Files::default().with("/etc/my.cnf", text);
    assert_eq!(resolved(&args(&["mariadbd", "--defaults-group-suffix=_a"]), &mut files).connect_timeout_s.value, 3);
    let mut files = Files::default().with("/etc/my.cnf", text);
    let p = Process { group_suffix: Some("_b".into()), ..args(&["mariadbd"]) };
    assert_eq!(resolved(&p, &mut files).connect_timeout_s.value, 4);
}

#[test]
fn refusals_are_kept_and_reading_goes_on() {
    let mut files = Files::default().with("/etc/mysql/my.cnf", "[mysqld]\nconnect_timeout=8\n");
    files.refused.insert("/etc/my.cnf".into(), Refusal::NotTrusted);
    let c = resolved(&args(&["mariadbd"]), &mut files);
    assert_eq!(c.connect_timeout_s.value, 8);
    assert_eq!(c.refused().collect::<Vec<_>>(), [("/etc/my.cnf", Refusal::NotTrusted)]);
}

#[test]
fn name_lookup_is_ruled_out_by_the_config_loopback_and_unix_sockets() {
    let remote = Some("127.0.0.2:5000".parse().unwrap());
    let skip = ServerConfig { skip_name_resolve: Setting { value: true, source: Source::CommandLine, adjusted: false }, ..ServerConfig::default() };
    assert_eq!(name_lookup(remote, false, None), NameLookup::Possible);
    assert_eq!(name_lookup(remote, false, Some(&ServerConfig::default())), NameLookup::Possible);
    assert_eq!(name_lookup(remote, false, Some(&skip)), NameLookup::SkippedByConfig);
    let known = Some(&skip).map(|_| ServerConfig::default());
    assert_eq!(name_lookup(Some("127.0.0.1:5000".parse().unwrap()), false, known.as_ref()), NameLookup::Loopback);
    assert_eq!(name_lookup(Some("[::1]:5000".parse().unwrap()), false, known.as_ref()), NameLookup::Loopback);
    // A server of unknown kind (the lab's own, a replay): loopback clients may be looked up.
    assert_eq!(name_lookup(Some("127.0.0.1:5000".parse().unwrap()), false, None), NameLookup::Possible);
    assert_eq!(name_lookup(None, true, None), NameLookup::UnixSocket);
}

//! The syntax of MariaDB's option files and command line, for the few options the
//! verdicts need: lines of an option file, the options of a command line, and the
//! option names in all their spellings (`connect-timeout`, `connect_timeout`,
//! `loose-…`, `skip-…`/`disable-…`/`enable-…` for booleans).

/// One line of an option file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Empty, or a comment (`#`, `;`).
    Blank,
    /// `[group]`.
    Group(&'a str),
    /// `name`, or `name = value` (quotes, escapes and an end comment taken off).
    Option { name: &'a str, value: Option<String> },
    /// `!include PATH`.
    Include(&'a str),
    /// `!includedir DIR`.
    IncludeDir(&'a str),
    /// Nothing the server would take (it would refuse to start over most of these).
    Invalid,
}

/// One line of an option file, as the server reads it.
pub fn parse_line(raw: &str) -> Line<'_> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return Line::Blank;
    }
    if let Some(rest) = line.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((g, _)) if !g.trim().is_empty() => Line::Group(g.trim()),
            _ => Line::Invalid,
        };
    }
    if let Some(rest) = line.strip_prefix('!') {
        let (word, path) = rest.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((rest, ""));
        let path = path.trim();
        return match word {
            _ if path.is_empty() => Line::Invalid,
            "includedir" => Line::IncludeDir(path),
            "include" => Line::Include(path),
            _ => Line::Invalid,
        };
    }
    match line.split_once('=') {
        None => Line::Option { name: strip_end_comment(line).trim(), value: None },
        Some((name, value)) => Line::Option { name: name.trim(), value: Some(unquote(strip_end_comment(value.trim()).trim())) },
    }
}

/// An unquoted `#` starts a comment to the end of the line.
fn strip_end_comment(s: &str) -> &str {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &s[..i],
            _ => {}
        }
    }
    s
}

/// A value in matching quotes loses them; backslash escapes are read.
fn unquote(s: &str) -> String {
    let inner = match s.as_bytes() {
        [q @ (b'\'' | b'"'), .., last] if last == q && s.len() >= 2 => &s[1..s.len() - 1],
        _ => s,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('s') => out.push(' '),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// What a command line says of option files, and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `--no-defaults`: no option file at all.
    pub no_defaults: bool,
    /// `--defaults-file=FILE`: this file only.
    pub defaults_file: Option<String>,
    /// `--defaults-extra-file=FILE`: read after the global files.
    pub defaults_extra_file: Option<String>,
    /// `--defaults-group-suffix=S`: the groups with S after them too.
    pub group_suffix: Option<String>,
    /// Every `--name[=value]` option after those, in order (value taken from the next
    /// argument for the options that need one).
    pub options: Vec<(String, Option<String>)>,
}

/// The server's arguments (argv[0] first). The options that choose files count only
/// at the start, before any other, as the server requires.
pub fn parse_command_line(args: &[String]) -> CommandLine {
    let mut cmd = CommandLine::default();
    let mut rest = args.iter().skip(1).peekable();
    while let Some(a) = rest.peek() {
        if a.as_str() == "--no-defaults" {
            cmd.no_defaults = true;
        } else if a.as_str() == "--print-defaults" {
        } else if let Some(v) = a.strip_prefix("--defaults-file=") {
            cmd.defaults_file = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--defaults-extra-file=") {
            cmd.defaults_extra_file = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--defaults-group-suffix=") {
            cmd.group_suffix = Some(v.to_string());
        } else if a.starts_with("--login-path=") {
        } else {
            break;
        }
        rest.next();
    }
    while let Some(a) = rest.next() {
        if a == "--" {
            break;
        }
        let Some(opt) = a.strip_prefix("--") else { continue };
        match opt.split_once('=') {
            Some((name, value)) => cmd.options.push((name.to_string(), Some(value.to_string()))),
            None if takes_value(opt) => {
                let value = rest.next().cloned();
                cmd.options.push((opt.to_string(), value));
            }
            None => cmd.options.push((opt.to_string(), None)),
        }
    }
    cmd
}

/// The name with `-` for `_` and without `loose-` (the server's names are
/// case-sensitive: only these vary).
fn canonical(name: &str) -> String {
    let name = name.replace('_', "-");
    match name.strip_prefix("loose-") {
        Some(rest) => rest.to_string(),
        None => name,
    }
}

/// The options of ours that take their value from the next argument when no `=` is given.
fn takes_value(name: &str) -> bool {
    matches!(canonical(name).as_str(), "connect-timeout" | "max-connect-errors" | "proxy-protocol-networks")
}

/// An option the verdicts depend on, with its value read as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    ConnectTimeout(u64),
    MaxConnectErrors(u64),
    SkipNameResolve(bool),
    ProxyProtocolNetworks(String),
}

/// The option `name` (as written) with `value`, if it is one of ours and the server
/// would take the value.
pub fn option(name: &str, value: Option<&str>) -> Option<Known> {
    let name = canonical(name);
    match name.as_str() {
        "connect-timeout" => return Some(Known::ConnectTimeout(number(value?)?)),
        "max-connect-errors" => return Some(Known::MaxConnectErrors(number(value?)?)),
        "proxy-protocol-networks" => return Some(Known::ProxyProtocolNetworks(value?.trim().to_string())),
        "skip-name-resolve" => return Some(Known::SkipNameResolve(value.map_or(Some(true), boolean)?)),
        _ => {}
    }
    // The boolean's prefixes: skip-/disable- turn it off, enable- on.
    let (on, rest) = if let Some(r) = name.strip_prefix("skip-").or_else(|| name.strip_prefix("disable-")) {
        (false, r)
    } else if let Some(r) = name.strip_prefix("enable-") {
        (true, r)
    } else {
        return None;
    };
    (rest == "skip-name-resolve").then_some(Known::SkipNameResolve(on))
}

/// A boolean as the server takes it: 1/0, ON/OFF, TRUE/FALSE, YES/NO, any case.
fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// A number as the server takes it: digits, optionally K, M, G, T, P or E (powers of 1024).
fn number(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, shift) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'p' => 50,
                'e' => 60,
                _ => return None,
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// "10.11" → (10, 11).
pub fn major_minor(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    let ok = |x: &str| !x.is_empty() && x.len() <= 4 && x.bytes().all(|b| b.is_ascii_digit());
    (ok(a) && ok(b)).then(|| Some((a.parse().ok()?, b.parse().ok()?))).flatten()
}

//! `lab`: reproducible scenarios against a server the command starts itself,
//! traced live. For now one scenario on a throwaway MariaDB.
pub mod mariadb;

use std::io::Write;

use anyhow::{bail, Result};

use crate::watch::{self, WatchOptions};
use mariadb::{MariaDb, MariaDbOptions, LAB_PASSWORD, LAB_USER};

/// (name, what it shows)
pub const SCENARIOS: &[(&str, &str)] = &[(
    "logins",
    "three successful logins and one wrong password against a throwaway MariaDB; \
     every accepted connection is traced",
)];

pub fn list(out: &mut dyn Write) -> Result<()> {
    for (name, what) in SCENARIOS {
        writeln!(out, "{name:<10} {what}")?;
    }
    Ok(())
}

/// Run a scenario; text or JSON goes to `out`, notices to `log`.
pub async fn run(scenario: &str, json: bool, out: &mut dyn Write, log: &mut dyn Write) -> Result<()> {
    if !SCENARIOS.iter().any(|(n, _)| *n == scenario) {
        bail!("unknown scenario `{scenario}` (see `handshake-trace lab --list`)");
    }
    if !mariadb::installed() {
        bail!("the `logins` scenario needs MariaDB: apt-get install mariadb-server mariadb-client");
    }
    crate::privileges::require_bpf()?;
    writeln!(log, "lab: starting a throwaway MariaDB on 127.0.0.1 ...")?;
    let db = tokio::task::spawn_blocking(|| MariaDb::start(&MariaDbOptions::default())).await??;
    writeln!(log, "lab: mariadbd pid {} listening on {}", db.pid(), db.addr())?;
    let opts = WatchOptions { pids: vec![db.pid()], json, ..Default::default() };

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let db = std::sync::Arc::new(db);
    let clients_db = db.clone();
    // Clients start once tracing is attached; tracing stops when they are done.
    let clients = async move {
        let _ = ready_rx.await;
        tokio::task::spawn_blocking(move || run_clients(&clients_db)).await
    };
    let results = std::sync::Mutex::new(None);
    let stop = async {
        let _ = ready_tx.send(());
        *results.lock().unwrap() = Some(clients.await);
        // Let the last events reach the ring buffer.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let summary = watch::run(&opts, out, log, stop).await;
    let results = match results.into_inner().unwrap() {
        Some(r) => r??,
        None => Vec::new(),
    };
    let summary = summary?;
    writeln!(log, "\nlab: what the clients saw:")?;
    for r in results {
        writeln!(log, "  {r}")?;
    }
    watch::print_summary(&summary, log)?;
    writeln!(log, "lab: server Aborted_connects = {}", db.status("Aborted_connects")?)?;
    Ok(())
}

fn run_clients(db: &MariaDb) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    for i in 1..=3 {
        let out = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"])?;
        seen.push(format!(
            "login {i} as {LAB_USER}: {}",
            if out.status.success() { "ok, SELECT 1 returned 1".to_string() } else { String::from_utf8_lossy(&out.stderr).trim().to_string() }
        ));
    }
    let out = db.client(LAB_USER, "wrong-password", &["-e", "SELECT 1"])?;
    seen.push(format!("login with a wrong password: {}", String::from_utf8_lossy(&out.stderr).trim()));
    Ok(seen)
}

//! The traced servers' configuration (connect_timeout, max_connect_errors,
//! skip-name-resolve, proxy-protocol-networks), read when each is adopted, said once,
//! and handed to the pipeline; and the hosts nearing their server's max_connect_errors,
//! warned of as they cross.
use std::{io::Write, sync::Arc};

use anyhow::Result;

use super::WatchOptions;
use crate::{
    capture::{server_config, targets::ServerProcess},
    output::{
        notice::{self, Level},
        reason,
    },
    pipeline::Pipeline,
};

/// Read a new target's configuration (a server named mysqld or mariadbd: the rules are
/// theirs), say it, and give it to the pipeline.
pub fn adopt(server: &ServerProcess, opts: &WatchOptions, pipeline: &mut Pipeline, log: &mut dyn Write) -> Result<()> {
    if !server.named_like_a_server() {
        return Ok(());
    }
    let cfg = server_config::read(server.pid, opts.server);
    notice::say(log, &opts.notices, Level::Notice, &notice::server_config(server.pid, &cfg))?;
    if let Some(text) = notice::config_refused(server.pid, &cfg) {
        notice::say(log, &opts.notices, Level::Warning, &text)?;
    }
    pipeline.server_config(server.pid, Arc::new(cfg));
    Ok(())
}

/// Warn of the hosts that neared or reached their server's max_connect_errors.
pub fn warn_hosts(pipeline: &mut Pipeline, opts: &WatchOptions, log: &mut dyn Write) -> Result<()> {
    for w in pipeline.host_warnings() {
        notice::say(log, &opts.notices, Level::Warning, &reason::host_warning(&w))?;
    }
    Ok(())
}

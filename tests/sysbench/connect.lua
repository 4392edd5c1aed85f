-- handshake-trace bench: one whole connection per event, as a real client makes it:
-- connect → greeting → login → OK → SELECT 1 → quit (libmariadb, through sysbench).
-- Run by `cargo xtask bench` (tests/bench.rs) with --db-driver=mysql and the server's
-- host, port, user and password on the command line.

function thread_init()
   drv = sysbench.sql.driver()
end

function event()
   local con = drv:connect()
   con:query("SELECT 1")
   con:disconnect()
end

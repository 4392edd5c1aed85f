-- handshake-trace bench: established traffic. Each thread logs in once (thread_init)
-- and then sends one SELECT 1 per event on that persistent connection.
-- Run by `cargo xtask bench` (tests/bench.rs) with --db-driver=mysql and the server's
-- host, port, user and password on the command line.

function thread_init()
   drv = sysbench.sql.driver()
   con = drv:connect()
end

function thread_done()
   con:disconnect()
end

function event()
   con:query("SELECT 1")
end

#!/usr/bin/env bash
# A 2-minute (default) mixed workload against a throwaway MariaDB 10.11, traced by
# `handshake-trace watch` inside tmux at 80x24; the pane's scrollback and the tracer's
# stderr are saved. Needs root, mariadb-server/-client, tmux, socat.
#
#   mixed-workload.sh --bin PATH --out DIR [--duration SECS] [--port PORT] [-- WATCH ARGS...]
#
# Workload (all on loopback):
#   ok logins          mariadb CLI as 'app' over TCP, every 1 s; as 'app' over the Unix socket, every 10 s
#   wrong passwords    'app' from 127.0.0.2 every 3 s, 'report' from 127.0.0.3 every 4 s
#                      (source addresses through socat proxies that bind them)
#   silent client      connects, sends nothing, stays 4 s (> connect_timeout=2) every 15 s
#   port check         connect and close at once, every 10 s
# Output in DIR: pane.txt (tmux capture-pane -p -S -: the rows as seen), pane-joined.txt (-J:
# wrapped rows joined, so a line over 80 characters wrapped), counts.txt, stderr.txt (watch's stderr),
# workload.log (what was run, with counts), server-status.txt, error.log (mariadbd's).
set -euo pipefail

BIN= OUT= DURATION=120 PORT=46010
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
WATCH_ARGS=("$@")
[[ -x $BIN && -n $OUT ]] || { echo "usage: $0 --bin PATH --out DIR [--duration SECS] [--port PORT] [-- WATCH ARGS]" >&2; exit 2; }
BIN=$(realpath "$BIN")
mkdir -p "$OUT"; OUT=$(realpath "$OUT")
PROXY2=$((PORT + 1)) PROXY3=$((PORT + 2))
WORK=$(mktemp -d /tmp/mixed-workload.XXXXXX)
SOCK=$WORK/mariadbd.sock
TMUX_SOCK=mixed-workload-$$
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  tmux -L "$TMUX_SOCK" kill-server 2>/dev/null
  if [[ -n ${DB_PID:-} ]]; then
    kill "$DB_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DB_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "$(date -u +%H:%M:%S.%3N) $*" >>"$OUT/workload.log"; }
: >"$OUT/workload.log"; : >"$OUT/counts.txt"

# The server, as tests/harness (handshake-trace-lab/src/mariadb.rs) starts one.
mkdir -p "$WORK/data" "$WORK/tmp"
mariadb-install-db --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --user=root \
  --auth-root-authentication-method=socket --skip-test-db >"$WORK/install.log" 2>&1
# The port may be taken by some client's ephemeral port on a busy machine (it is in the
# ephemeral range): then the next one, three at a time (the server and two proxies).
start_server() {
  mariadbd --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --socket="$SOCK" \
    --pid-file="$WORK/mariadbd.pid" --log-error="$WORK/error.log" --port="$PORT" \
    --bind-address=127.0.0.1 --user=root --connect-timeout=2 --skip-log-bin \
    --innodb-buffer-pool-size=32M --log-warnings=2 </dev/null >/dev/null 2>&1 &
  DB_PID=$!
  # Up to 3 minutes: a loaded machine (parallel builds and tests) starts it slowly.
  for _ in $(seq 900); do
    mariadb --no-defaults --socket="$SOCK" -u root -e 'SELECT 1' >/dev/null 2>&1 && return 0
    kill -0 "$DB_PID" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
for _ in 1 2 3 4 5 6; do
  start_server && break
  echo "mariadbd did not start on port $PORT: $(grep ERROR "$WORK/error.log" | tail -1)" >&2
  kill "$DB_PID" 2>/dev/null || true; wait "$DB_PID" 2>/dev/null || true; DB_PID=
  PORT=$((PORT + 3)); PROXY2=$((PORT + 1)); PROXY3=$((PORT + 2))
done
[[ -n $DB_PID ]] || { echo "mariadbd did not start; its log:" >&2; tail -20 "$WORK/error.log" >&2; exit 1; }
root_sql() { mariadb --no-defaults --socket="$SOCK" -u root -N -B -e "$1"; }
root_sql "DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES;
  CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret'; CREATE USER 'app'@'localhost' IDENTIFIED BY 'app-secret';
  CREATE USER 'report'@'%' IDENTIFIED BY 'report-secret'; GRANT SELECT ON *.* TO 'app'@'%', 'app'@'localhost', 'report'@'%';"
log "mariadbd pid $DB_PID port $PORT socket $SOCK connect_timeout=2"

# Two source addresses for the wrong passwords: socat proxies that bind them.
socat TCP-LISTEN:$PROXY2,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:$PORT,bind=127.0.0.2 &
PIDS+=($!)
socat TCP-LISTEN:$PROXY3,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:$PORT,bind=127.0.0.3 &
PIDS+=($!)

# The tracer in an 80x24 tmux window; stderr to the pane and to stderr.txt.
printf 'set -g history-limit 500000\n' >"$WORK/tmux.conf"
# stderr reaches the terminal through tee (a pipe): COLUMNS tells the tracer the
# terminal's width for it (stdout's width comes from the terminal itself).
TRACE_CMD="COLUMNS=80 $(printf '%q ' "$BIN" watch -p "$DB_PID" "${WATCH_ARGS[@]}")"
tmux -L "$TMUX_SOCK" -f "$WORK/tmux.conf" new-session -d -s watch -x 80 -y 24 \
  "cd $WORK; $TRACE_CMD 2> >(trap \"\" INT; exec tee $OUT/stderr.txt >&2); echo \"[watch exited \$?]\"; sleep 100000"
for _ in $(seq 150); do grep -q '^Tracing' "$OUT/stderr.txt" 2>/dev/null && break; sleep 0.2; done
log "tracer started: $TRACE_CMD (tmux 80x24)"

client() { # host port user password [extra args]
  local h=$1 p=$2 u=$3 pw=$4; shift 4
  mariadb --no-defaults -h "$h" -P "$p" -u "$u" --password="$pw" -N -B --connect-timeout=10 "$@" -e 'SELECT 1' >/dev/null 2>&1
}
every() { # interval name command...
  local iv=$1 name=$2; shift 2
  ( n=0; end=$((SECONDS + DURATION))
    while (( SECONDS < end )); do
      "$@" && r=ok || r=fail; n=$((n + 1)); log "$name #$n $r"; sleep "$iv"
    done ) &
  PIDS+=($!)
}
silent() { exec 3<>/dev/tcp/127.0.0.1/$PORT && sleep 4; exec 3<&-; }
port_check() { exec 3<>/dev/tcp/127.0.0.1/$PORT; exec 3<&-; }
unix_ok() { mariadb --no-defaults --socket="$SOCK" -u app --password=app-secret -N -B -e 'SELECT 1' >/dev/null 2>&1; }

every 1 ok-tcp client 127.0.0.1 "$PORT" app app-secret
every 10 ok-unix unix_ok
every 3 wrong-password-127.0.0.2 client 127.0.0.1 "$PROXY2" app not-the-password
every 4 wrong-password-127.0.0.3 client 127.0.0.1 "$PROXY3" report wrong
every 15 silent-client silent
every 10 port-check port_check
sleep "$DURATION"
wait "${PIDS[@]:2}" 2>/dev/null || true
sleep 5 # the last silent client's timeout
tmux -L "$TMUX_SOCK" send-keys -t watch C-c
for _ in $(seq 100); do grep -q '^\[watch exited' <(tmux -L "$TMUX_SOCK" capture-pane -p -t watch -S -) && break; sleep 0.2; done
tmux -L "$TMUX_SOCK" capture-pane -p -t watch -S - >"$OUT/pane.txt"
# -J joins wrapped rows back into the lines printed: any longer than 80 wrapped.
tmux -L "$TMUX_SOCK" capture-pane -p -J -t watch -S - >"$OUT/pane-joined.txt"
root_sql "SHOW GLOBAL STATUS WHERE Variable_name IN ('Aborted_connects','Connections','Connection_errors_internal')" >"$OUT/server-status.txt"
cp "$WORK/error.log" "$OUT/error.log"
for k in ok-tcp ok-unix wrong-password-127.0.0.2 wrong-password-127.0.0.3 silent-client port-check; do
  echo "$k: $(grep -c " $k #" "$OUT/workload.log")" >>"$OUT/counts.txt"
done
WRAPPED=$(awk 'length > 80' "$OUT/pane-joined.txt" | wc -l)
log "done; pane $(wc -l <"$OUT/pane.txt") rows, $(wc -l <"$OUT/pane-joined.txt") printed lines, $WRAPPED wrapped (longer than 80 columns)"
echo "wrapped lines (>80 columns): $WRAPPED" >>"$OUT/counts.txt"

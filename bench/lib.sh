# Shared helpers for the gabbro benchmarks (sourced, not run).
# Environment:
#   GABBRO        the release binary (default $CARGO_TARGET_DIR/release/gabbro,
#                 else ./target/release/gabbro)
#   BENCH_PORT    port for `gabbro serve` (default 4790)
#   BENCH_WORK    scratch directory for data dirs, bodies, logs (default /tmp/gabbro-bench)
#   GABBRO_TEST_PG  admin URL of PostgreSQL (default postgres://postgres@127.0.0.1:5432/postgres);
#                 each configuration gets its own fresh database, dropped at exit.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
GABBRO=${GABBRO:-${CARGO_TARGET_DIR:-$REPO/target}/release/gabbro}
PORT=${BENCH_PORT:-4790}
URL=http://127.0.0.1:$PORT
WORK=${BENCH_WORK:-/tmp/gabbro-bench}
PG_ADMIN=${GABBRO_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_ADMIN%/*}
CLK_TCK=$(getconf CLK_TCK)

SERVER_PID=""
DATA_DIR=""
DB_URL=""
PG_DBS=()

mkdir -p "$WORK"

die() { echo "bench: $*" >&2; exit 1; }

need() {
  for c in "$@"; do command -v "$c" >/dev/null || die "missing $c (apt-get install $c)"; done
}

[ -x "$GABBRO" ] || die "no gabbro binary at $GABBRO (cargo build --release -p gabbro)"
need curl psql sqlite3 awk

# A fresh PostgreSQL database for one configuration; sets DB_URL (not
# printed: a $(…) subshell would lose the name that cleanup drops).
new_pg_db() {
  local name="gabbro_bench_${1//-/_}_$(date +%s)_$$"
  psql -q -v ON_ERROR_STOP=1 "$PG_ADMIN" -c "CREATE DATABASE $name" >/dev/null \
    || die "PostgreSQL unreachable at $PG_ADMIN"
  PG_DBS+=("$name")
  DB_URL="$PG_BASE/$name"
}

drop_pg_dbs() {
  for name in "${PG_DBS[@]}"; do
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
  done
  PG_DBS=()
}

# setup_db sqlite|postgres NAME: sets DATA_DIR and DB_URL for a fresh configuration.
setup_db() {
  local kind=$1 name=$2
  DATA_DIR="$WORK/$name"
  rm -rf "$DATA_DIR"
  mkdir -p "$DATA_DIR"
  case $kind in
    sqlite) DB_URL="sqlite://$DATA_DIR/gabbro.db" ;;
    postgres) new_pg_db "$name" ;;
    *) die "unknown database $kind" ;;
  esac
  # The same key on every restart of this configuration (required for PostgreSQL).
  head -c 32 /dev/urandom | base64 > "$DATA_DIR/bench.key"
}

# start_server CAPACITY: `gabbro serve` on DATA_DIR/DB_URL; waits for /health.
start_server() {
  local capacity=$1
  "$GABBRO" serve --data-dir "$DATA_DIR" --listen "127.0.0.1:$PORT" --db "$DB_URL" \
    --worker-capacity "$capacity" --encryption-key "$(cat "$DATA_DIR/bench.key")" \
    --cron false >>"$DATA_DIR/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "$URL/health" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$DATA_DIR/serve.log" >&2; die "gabbro serve exited"; }
    sleep 0.1
  done
  die "gabbro serve did not answer /health within 60 s"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  stop_server
  drop_pg_dbs
}
trap cleanup EXIT

deploy() {
  "$GABBRO" deploy "$1" --server "$URL" --token "$(head -n1 "$DATA_DIR/admin.token")" >"$DATA_DIR/deploy.log" 2>&1 \
    || { cat "$DATA_DIR/deploy.log" >&2; die "deploy of $1 failed"; }
}

# sql QUERY: one query against the configuration's database; rows as a|b|c.
sql() {
  case $DB_URL in
    sqlite://*) sqlite3 -cmd ".timeout 10000" "${DB_URL#sqlite://}" "$1" ;;
    *) psql -At -v ON_ERROR_STOP=1 "$DB_URL" -c "$1" ;;
  esac
}

# Memory of one process, in kB.
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# CPU seconds (user + system) a process has used so far.
cpu_s() {
  awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# CPU seconds of a process and of its children that exited and were waited
# for (a run child forks a process per run: its time is counted here).
cpu_tree_s() {
  awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13 + $14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Direct children of a process.
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# A JSON body of about N bytes, shaped like the example project's input.
make_body() {
  local bytes=$1 out=$2 i=0
  {
    printf '{"source":"bench","patients":['
    # 32 bytes of frame, 77 per patient (76 and a comma).
    local n=32
    while :; do
      [ $i -gt 0 ] && printf ','
      printf '{"id":"p%06d","given":"Ada","family":"Lovelace","age":"36","ward":"north"}' "$i"
      i=$((i + 1))
      n=$((n + 77))
      [ $((n + 38)) -ge "$bytes" ] && break
    done
    printf ']}'
  } >"$out"
}

# percentile FILE Q: the Q-quantile (0..1) of the numbers in FILE, one a line.
percentile() {
  sort -n "$1" | awk -v q="$2" '{ v[NR] = $1 } END {
    if (NR == 0) { print "n/a"; exit }
    i = int(NR * q); if (i < NR * q) i++; if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}

stamp() { date -u +%H:%M:%S; }

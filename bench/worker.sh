#!/usr/bin/env bash
# Worker throughput (issue 4), per database:
#  1. drain: QUEUED one-step runs are enqueued through the webhook on
#     `gabbro serve --worker-capacity 0`; the server is restarted with
#     `--worker-capacity CAPACITY` and its embedded worker drains the queue.
#     runs/s = finished runs / (last finished_at - first claimed_at), from
#     the database; memory sampled every SAMPLE s as PSS (smaps_rollup) of
#     the server and of its child processes (the run children);
#  2. start latency: on a fresh database with an idle embedded worker,
#     LAT_N webhooks LAT_GAP s apart; webhook→run:start is
#     runs.started_at - runs.inserted_at (both µs; inserted_at is taken when
#     the ingest is applied, started_at is the worker's run:start
#     timestamp), split into →claimed, →started and →finished.
#
#   bench/worker.sh
#   DBS=sqlite QUEUED=20000 DRAIN_MAX=120 bench/worker.sh
# Environment: DBS (default "sqlite postgres"), QUEUED (default 100000),
# CAPACITY (default 10), DRAIN_MAX (seconds, default 300), SAMPLE (default 2),
# LAT_N (default 200), LAT_GAP (default 0.05), PHASES (default "drain latency"),
# WAIT_INDEX (default 1: the drain starts once the UI's search index has
# caught up with the queued work orders; 0: at once).
source "$(dirname "$0")/lib.sh"
need wrk

DBS=${DBS:-sqlite postgres}
QUEUED=${QUEUED:-100000}
CAPACITY=${CAPACITY:-10}
DRAIN_MAX=${DRAIN_MAX:-300}
SAMPLE=${SAMPLE:-2}
LAT_N=${LAT_N:-200}
LAT_GAP=${LAT_GAP:-0.05}
PHASES=${PHASES:-drain latency}
PROJECT="$BENCH_DIR/one-step.yaml"
HOOK=bench-one
BODY="$WORK/body-256.json"
make_body 256 "$BODY"

unfinished() { sql "SELECT count(*) FROM runs WHERE state IN ('available', 'claimed', 'started')"; }

post_one() {
  curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary "@$BODY" "$URL/i/$HOOK"
}

# Sum of PSS (kB) of the server's child processes (the run children) and of
# their own children (a run child's fork per run, alive while its run
# executes, so a sample catches only some), and the count of run children.
children_pss() {
  local total=0 n=0 c g
  for c in $(children "$SERVER_PID"); do
    total=$((total + $(pss_kb "$c")))
    n=$((n + 1))
    for g in $(children "$c"); do total=$((total + $(pss_kb "$g"))); done
  done
  echo "$total $n"
}

children_cpu() {
  local c
  for c in $(children "$SERVER_PID"); do cpu_tree_s "$c"; done | awk '{s += $1} END {printf "%.2f\n", s}'
}

drain() {
  local db=$1
  setup_db "$db" "worker-$db"
  start_server 0
  deploy "$PROJECT"
  echo "== $(stamp) worker drain, $db: enqueueing $QUEUED runs (capacity 0)"
  local t0=$SECONDS
  # wrk stops sending after QUEUED responses but sleeps out its -d: end it
  # once the runs are in.
  wrk -t1 -c32 -d600s -s "$BENCH_DIR/post.lua" "$URL/i/$HOOK" -- "$BODY" "$QUEUED" >"$WORK/worker-$db-enqueue.wrk" &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 1
    [ "$(sql "SELECT count(*) FROM runs")" -ge "$QUEUED" ] && break
  done
  kill "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  local enqueue_s=$((SECONDS - t0))
  if [ "${WAIT_INDEX:-1}" = 1 ]; then
    # The UI's search indexer (crates/ui/src/search.rs) indexes new work
    # orders while ingest is quiet: let it finish here, as it would while a
    # real backlog waits, so the drain measures the worker's path and not
    # indexing left over from the ingest (WAIT_INDEX=0 drains at once).
    local ti=$SECONDS
    until [ "$(sql "SELECT count(*) FROM work_orders WHERE inserted_at > COALESCE((SELECT inserted_at FROM ui_search_progress WHERE id = 1), 0)")" -eq 0 ]; do
      [ $((SECONDS - ti)) -ge 600 ] && { echo "search indexer still behind after 600 s"; break; }
      sleep 1
    done
    echo "search index caught up in $((SECONDS - ti)) s"
  fi
  local queued; queued=$(sql "SELECT count(*) FROM runs WHERE state = 'available'")
  local base_pss; base_pss=$(pss_kb "$SERVER_PID")
  echo "queued $queued runs in $enqueue_s s; server PSS at capacity 0, idle: $((base_pss / 1024)) MB"
  stop_server

  echo "== $(stamp) draining with --worker-capacity $CAPACITY ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  start_server "$CAPACITY"
  local start=$SECONDS left peak_total=0 peak_line="" samples="$WORK/worker-$db-samples.txt"
  : >"$samples"
  while :; do
    sleep "$SAMPLE"
    left=$(unfinished)
    local spss; spss=$(pss_kb "$SERVER_PID")
    local cp; cp=$(children_pss)
    local total=$((spss + ${cp% *}))
    echo "t=$((SECONDS - start))s unfinished=$left server_pss=${spss}kB children_pss=${cp% *}kB children=${cp#* }" >>"$samples"
    if [ "$total" -gt "$peak_total" ]; then
      peak_total=$total
      peak_line="server ${spss} kB + ${cp#* } children ${cp% *} kB"
    fi
    [ "$left" -eq 0 ] && break
    [ $((SECONDS - start)) -ge "$DRAIN_MAX" ] && break
  done
  curl -fsS "$URL/metrics" >"$WORK/worker-$db-metrics.txt" 2>/dev/null || true
  awk '/^gabbro_claim_duration_seconds_(sum|count)/ { v[$1] = $2 } END {
    c = v["gabbro_claim_duration_seconds_count"]
    if (c > 0) printf "claims answered: %d, mean %.2f ms (server-side, /metrics)\n", c, v["gabbro_claim_duration_seconds_sum"] * 1000 / c }' \
    "$WORK/worker-$db-metrics.txt"
  local server_cpu child_cpu
  server_cpu=$(cpu_s "$SERVER_PID")
  child_cpu=$(children_cpu)
  sql "SELECT state, count(*) FROM runs GROUP BY state ORDER BY state" | tr '\n' ' '
  echo
  local row; row=$(sql "SELECT count(*), max(finished_at) - min(claimed_at) FROM runs WHERE finished_at IS NOT NULL")
  local n=${row%|*} span=${row#*|}
  awk -v n="$n" -v us="$span" -v cap="$CAPACITY" -v db="$db" -v scpu="$server_cpu" -v ccpu="$child_cpu" 'BEGIN {
    s = us / 1e6
    printf "RESULT drain %s capacity %d: %d runs finished in %.1f s = %.0f runs/s; CPU per run: server process %.2f ms, run children %.2f ms\n",
      db, cap, n, s, (s > 0 ? n / s : 0), (n > 0 ? scpu * 1000 / n : 0), (n > 0 ? ccpu * 1000 / n : 0) }'
  echo "RESULT memory $db: peak PSS during drain: $peak_line; capacity-0 server was $base_pss kB;" \
    "per active run: $(( (peak_total - base_pss) / CAPACITY / 1024 )) MB ((peak - capacity-0 server) / $CAPACITY)"
  echo "peak RSS of the server: $(( $(peak_rss_kb "$SERVER_PID") / 1024 )) MB; samples in $samples"
  stop_server
  drop_pg_dbs
}

latency() {
  local db=$1
  setup_db "$db" "latency-$db"
  start_server "$CAPACITY"
  deploy "$PROJECT"
  # Warm up: the children start and the adaptor is loaded once.
  for _ in $(seq 1 20); do post_one; sleep "$LAT_GAP"; done
  sleep 2
  local mark; mark=$(sql "SELECT max(inserted_at) FROM runs")
  echo "== $(stamp) start latency, $db: $LAT_N webhooks ${LAT_GAP}s apart, idle worker (capacity $CAPACITY)"
  for _ in $(seq 1 "$LAT_N"); do post_one; sleep "$LAT_GAP"; done
  for _ in $(seq 1 100); do [ "$(unfinished)" -eq 0 ] && break; sleep 0.2; done
  local q
  for part in "started_at - inserted_at:webhook→run:start" \
              "claimed_at - inserted_at:webhook→claimed" \
              "started_at - claimed_at:claimed→run:start" \
              "finished_at - started_at:run:start→finished"; do
    q=${part%%:*}
    sql "SELECT $q FROM runs WHERE inserted_at > $mark AND finished_at IS NOT NULL" >"$WORK/lat-$db.txt"
    echo "RESULT latency $db ${part#*:}: n=$(wc -l <"$WORK/lat-$db.txt") p50 $(percentile "$WORK/lat-$db.txt" 0.5 | awk '{printf "%.2f", $1/1000}') ms," \
      "p99 $(percentile "$WORK/lat-$db.txt" 0.99 | awk '{printf "%.2f", $1/1000}') ms," \
      "max $(percentile "$WORK/lat-$db.txt" 1 | awk '{printf "%.2f", $1/1000}') ms"
  done
  sql "SELECT state, count(*) FROM runs WHERE inserted_at > $mark GROUP BY state" | tr '\n' ' '
  echo
  stop_server
  drop_pg_dbs
}

for db in $DBS; do
  for phase in $PHASES; do
    "$phase" "$db"
  done
done

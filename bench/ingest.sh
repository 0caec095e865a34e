#!/usr/bin/env bash
# Webhook ingest (issue 3): wrk POSTs to /i/clinic-register of the example
# project on a release `gabbro serve --worker-capacity 0`, with 1 KB and
# 50 KB JSON bodies, on SQLite and on a fresh PostgreSQL database. Prints
# wrk's req/s and latency percentiles, non-2xx counts, the server's peak RSS
# (VmHWM) and its CPU time, and the runs actually committed.
#
#   bench/ingest.sh                      # every configuration
#   DBS=sqlite SIZES=1024 bench/ingest.sh
# Environment: DURATION (wrk seconds, default 20), WARMUP (default 3),
# THREADS (wrk threads, default 1), CONNS (connections, default 64),
# PROJECT (project.yaml to deploy, default /work/shared/examples/project.yaml),
# HOOK (its webhook path, default clinic-register), plus lib.sh's.
source "$(dirname "$0")/lib.sh"
need wrk

DBS=${DBS:-sqlite postgres}
SIZES=${SIZES:-1024 51200}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-1}
CONNS=${CONNS:-64}
PROJECT=${PROJECT:-/work/shared/examples/project.yaml}
HOOK=${HOOK:-clinic-register}

for db in $DBS; do
  for size in $SIZES; do
    name="ingest-$db-$size"
    body="$WORK/body-$size.json"
    make_body "$size" "$body"
    setup_db "$db" "$name"
    start_server 0
    deploy "$PROJECT"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      --data-binary "@$body" "$URL/i/$HOOK")
    [ "$code" = 200 ] || die "webhook answered $code"
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$BENCH_DIR/post.lua" "$URL/i/$HOOK" -- "$body" >/dev/null
    cpu0=$(cpu_s "$SERVER_PID")
    echo "== $(stamp) $name: $(wc -c <"$body") byte body, wrk -t$THREADS -c$CONNS -d${DURATION}s, $(cut -d' ' -f1-3 /proc/loadavg) load"
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$BENCH_DIR/post.lua" \
      "$URL/i/$HOOK" -- "$body" | tee "$WORK/$name.wrk"
    cpu1=$(cpu_s "$SERVER_PID")
    runs=$(sql "SELECT count(*) FROM runs")
    reqs=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
    echo "server: peak RSS $(( $(peak_rss_kb "$SERVER_PID") / 1024 )) MB, CPU $(awk -v a="$cpu0" -v b="$cpu1" -v d="$DURATION" 'BEGIN{printf "%.1f s in %d s (%.2f cores)", b-a, d, (b-a)/d}'), runs in database $runs (wrk counted $reqs requests in the measured part)"
    stop_server
    drop_pg_dbs
  done
done

#!/usr/bin/env bash
# Webhook ingest benchmark (docs/benchmarks.md, "Orchestrator ingest"). Run from the repository root:
#   cargo build --release -p gabbro-server --example serve && cargo build -p gabbro
#   crates/server/bench/ingest.sh sqlite 1024 64
# usage: ingest.sh sqlite|postgres BODY_BYTES CONNECTIONS
set -euo pipefail
DB=$1; SIZE=$2; CONNS=${3:-64}
SERVE=${SERVE:-target/release/examples/serve}
G=${GABBRO:-target/debug/gabbro}
PORT=4611
DIR=$(mktemp -d)
EXTRA=()
if [ "$DB" = postgres ]; then
  NAME=gabbro_bench_$$
  psql postgres://postgres@127.0.0.1:5432/postgres -qc "CREATE DATABASE $NAME"
  EXTRA=(--db "postgres://postgres@127.0.0.1:5432/$NAME" --encryption-key AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=)
fi
$SERVE --data-dir "$DIR/data" --listen 127.0.0.1:$PORT --worker-capacity 0 --cron false "${EXTRA[@]}" 2> "$DIR/serve.log" &
SPID=$!
until curl -fsS http://127.0.0.1:$PORT/health >/dev/null 2>&1; do sleep 0.2; done
GABBRO_SERVER=http://127.0.0.1:$PORT GABBRO_TOKEN=$(cat "$DIR/data/admin.token") $G deploy ${GABBRO_SHARED_DIR:-../shared}/examples/project.yaml >/dev/null
BODY_BYTES=$SIZE wrk -t2 -c$CONNS -d15s --latency -s crates/server/bench/post.lua http://127.0.0.1:$PORT/i/clinic-register
RSS=$(ps -o rss= -p $SPID)
echo "server RSS after run: $((RSS/1024)) MiB"
kill -TERM $SPID; wait $SPID || true
if [ "$DB" = postgres ]; then psql postgres://postgres@127.0.0.1:5432/postgres -qc "DROP DATABASE $NAME WITH (FORCE)"; fi
rm -rf "$DIR"

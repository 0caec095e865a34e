#!/usr/bin/env bash
# Claim latency (issue 3): the store's claim benchmark
# (crates/store/examples/claim_bench.rs) on SQLite and on a fresh PostgreSQL
# database: 100,000 available runs and 1,000,000 finished ones, ten
# workflows limited to 5 concurrent runs in two projects limited to 20,
# CLAIMS single-run claims one after another, each claimed run started and
# completed again so the limits keep biting. Prints p50/p99/max.
#
#   bench/claim.sh
#   DBS=postgres QUEUED=100000 FINISHED=1000000 CLAIMS=2000 bench/claim.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DBS=${DBS:-sqlite postgres}
QUEUED=${QUEUED:-100000}
FINISHED=${FINISHED:-1000000}
CLAIMS=${CLAIMS:-2000}
cargo build --release -q -p gabbro-store --example claim_bench
bin=${CARGO_TARGET_DIR:-target}/release/examples/claim_bench
for db in $DBS; do
  echo "== $(date -u +%H:%M:%S) claim, $db ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  /usr/bin/time -f "peak RSS %M kB, %e s" "$bin" "$db" "$QUEUED" "$FINISHED" "$CLAIMS"
done

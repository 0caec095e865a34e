#!/usr/bin/env bash
# The run child alone (docs/benchmarks.md, "the run child"): N one-step
# runs (language-common, one console.log) piped through `gabbro __child`,
# as the worker's pool sends them; prints the CPU time of the child and of
# every process it forked (one per run), per run, ROUNDS times.
#
#   bench/child.sh                      # the build under ./target/release
#   GABBRO=/path/to/other/gabbro bench/child.sh
# Environment: GABBRO, N (default 2000), ROUNDS (default 3).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
GABBRO=${GABBRO:-${CARGO_TARGET_DIR:-$REPO/target}/release/gabbro}
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
[ -x "$GABBRO" ] || { echo "no gabbro binary at $GABBRO" >&2; exit 1; }
requests=$(mktemp)
trap 'rm -f "$requests"' EXIT
request='{"plan":{"workflow":{"steps":[{"id":"a","adaptors":["@openfn/language-common@latest"],"expression":"fn(state => { console.log(\"hi\"); return { ...state, n: 1 }; });"}]}},"input":{"data":{}},"limits":{"timeout_ms":10000,"memory_limit_mb":128,"payload_limit_mb":10.0,"log_payload_limit_mb":1.0},"secrets":[]}'
for _ in $(seq 1 "$N"); do echo "$request"; done >"$requests"
for _ in $(seq 1 "$ROUNDS"); do
  # `time` counts the child and every process it waited for (its forks).
  TIMEFORMAT='%R %U %S'
  t=$( { time "$GABBRO" __child <"$requests" >"$requests.out"; } 2>&1 )
  done_runs=$(grep -c '"event":"run-complete","reason":"success"' "$requests.out" || true)
  rm -f "$requests.out"
  echo "$t" | awk -v n="$N" -v ok="$done_runs" '{ printf "RESULT child: %d runs (%d success) in %.2f s wall; CPU %.3f ms per run (user %.3f, system %.3f)\n", n, ok, $1, ($2 + $3) * 1000 / n, $2 * 1000 / n, $3 * 1000 / n }'
done

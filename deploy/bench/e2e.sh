#!/usr/bin/env bash
# The end-to-end benchmark of `make bench`: the five services (release build) in a
# namespace of their own (databases bench_*, topics bench.*, ports 30080-30084), driven
# by orders-load at a fixed rate (open loop) for a fixed time, the services' backlogs
# sampled each second; then orders-load reconcile (0 lost, 0 applied twice), and the
# run's tables and charts appended to the report (orders-load report).
#
# Settings: E2E_RATE (orders/s, 1000), E2E_SECONDS (60), BENCH_REPORT (the report,
# .local/bench/report.md); the charts go beside the report.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REPORT=${BENCH_REPORT:-$ROOT/.local/bench/report.md}
OUT=$(dirname "$REPORT")
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}/bench/e2e
BIN=$("$ROOT/deploy/local/target-dir.sh")/release
NS=bench
RATE=${E2E_RATE:-1000}
SECONDS_=${E2E_SECONDS:-60}
SERVICES=(command-service:30080 projector:30081 outbox-relay:30082 order-processor:30083 stats-aggregator:30084)

# shellcheck source=deploy/local/namespace-services.sh
. "$ROOT/deploy/local/namespace-services.sh"

log() { printf '[bench-e2e] %s\n' "$*"; }
die() {
  printf '[bench-e2e] ERROR: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  namespace_stop "${NAMESPACE_PIDS[@]}"
  "$ROOT/deploy/local/infra.sh" namespace delete "$NS" >/dev/null 2>&1 || true
}

main() {
  rm -rf "$STATE" && mkdir -p "$STATE" "$OUT"
  log "building the release binaries"
  (cd "$ROOT" && CARGO_TARGET_DIR=$("$ROOT/deploy/local/target-dir.sh") ${CARGO:-cargo} build --release --workspace --bins --locked --quiet)
  "$ROOT/deploy/local/infra.sh" namespace create "$NS" >"$STATE/infra.log"
  trap cleanup EXIT
  local entry metrics=()
  for entry in "${SERVICES[@]}"; do
    metrics+=(--metrics "${entry%%:*}=http://127.0.0.1:${entry##*:}/metrics")
  done
  namespace_start_all "$NS" "$STATE" "$BIN" "${SERVICES[@]}" >>"$STATE/infra.log" ||
    die "the services did not all become ready"
  log "$RATE orders/s for $SECONDS_ s (open loop), the five services of the release build"
  local rc=0 load_rc=0
  env COMMANDS_URL=http://127.0.0.1:30080 QUERIES_URL=http://127.0.0.1:30081 PROCESSOR_URL=http://127.0.0.1:30083 \
    "$BIN/orders-load" run --rate "$RATE" --orders $((RATE * SECONDS_)) "${metrics[@]}" \
    --retry-for 60s --visibility-timeout 120s --summary "$STATE/load.json" >"$STATE/load.log" 2>&1 || load_rc=$?
  tail -n 14 "$STATE/load.log"
  # shellcheck disable=SC2046 # namespace_urls prints NAME=value words
  env $(namespace_urls "$NS") "$BIN/orders-load" reconcile --settle 300s >"$STATE/reconcile.txt" 2>"$STATE/reconcile.log" || rc=$?
  cat "$STATE/reconcile.txt"
  local failed
  failed=$(summary_count "$STATE/load.json" failed) ||
    die "the load generator left no summary (status $load_rc); see $STATE/load.log"
  {
    echo
    echo "## End to end: the five services at a fixed rate"
    echo
    echo "orders-load run at $RATE orders/s for $SECONDS_ s (open loop: a create's latency counts from when it was due), against the release build of the five services on this machine, with the load generator on the same cores. Targets (issue 14): HTTP p99 under 20 ms, command to read model p99 under 50 ms, command to shipped p99 under 250 ms, 0 lost."
    echo
    "$BIN/orders-load" report --summary "$STATE/load.json" --charts "$OUT" --link .
    echo
    echo "Reconciliation after the run (orders-load reconcile):"
    echo
    echo '```'
    cat "$STATE/reconcile.txt"
    echo '```'
  } >>"$REPORT"
  # Targets missed, or commands seen later than the driver waited, are the report's to
  # show; a command that failed for good, or a difference, fails the benchmark.
  [ "$failed" = 0 ] || die "$failed commands failed for good; see $STATE/load.log"
  [ "$rc" = 0 ] || die "the reconciliation found differences; see $STATE/reconcile.txt"
  log "report: $REPORT"
}

main "$@"

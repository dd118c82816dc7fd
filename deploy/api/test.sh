#!/usr/bin/env bash
# The HTTP APIs held to their own descriptions (`make api-test`, part of `make test`):
# the five services run against the local Kafka and PostgreSQL in a namespace of their
# own (databases api_*, topics api.*, consumer groups api.*, ports 28080-28084, see
# deploy/local/infra.sh), then
#   1. every service's /openapi.json is a valid OpenAPI 3.1 document
#      (openapi-spec-validator);
#   2. Schemathesis, a property-based fuzzer of HTTP APIs, sends each operation of the
#      command API, the query API and the processor's admin API generated requests, valid
#      and invalid, and checks every answer against what the documents declare: no server
#      error, a declared status, content type, headers and body schema, and invalid input
#      refused.
# One worker: with two, Hypothesis' ast.parse of its filters' sources failed in threads
# here ("SystemError: AST constructor recursion depth mismatch", a CPython 3.11 bug).
# Settings: API_TEST_MAX_EXAMPLES (cases per operation and phase, default 30),
# API_TEST_SEED (the generator's seed, fixed so that a failure reproduces; default
# 20261201). Logs and reports in .local/api-test/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}/api-test
BIN=$("$ROOT/deploy/local/target-dir.sh")/debug
NS=api
MAX_EXAMPLES=${API_TEST_MAX_EXAMPLES:-30}
SEED=${API_TEST_SEED:-20261201}
# name:port; the fuzzed ones are the first three.
SERVICES=(command-service:28080 projector:28081 order-processor:28083 outbox-relay:28082 stats-aggregator:28084)
FUZZED=3

log() { printf '[api-test] %s\n' "$*"; }
die() {
  printf '[api-test] ERROR: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=deploy/local/namespace-services.sh
. "$ROOT/deploy/local/namespace-services.sh"

cleanup() {
  namespace_stop "${NAMESPACE_PIDS[@]}"
  "$ROOT/deploy/local/infra.sh" namespace delete "$NS" >/dev/null 2>&1 || true
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1$2" || true; }

# Data for the documents' examples (user `alice`, SKU `book-1`) to find, so that their
# cases reach real answers: a tracked SKU, and an order of alice's, projected.
seed() {
  local body id i
  curl -sf --max-time 10 -X PUT -H 'Content-Type: application/json' -d '{"available": 1000}' \
    http://127.0.0.1:28083/inventory/book-1 >/dev/null || die "cannot track SKU book-1"
  body=$(curl -sf --max-time 10 -X POST -H 'Content-Type: application/json' \
    -d '{"user_id": "alice", "currency": "EUR", "items": [{"sku": "book-1", "quantity": 2, "unit_price_minor": 1250}]}' \
    http://127.0.0.1:28080/commands/orders) || die "cannot create alice's order"
  id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["order_id"])' <<<"$body")
  for ((i = 0; i < 240; i++)); do
    [ "$(http_status 28081 "/queries/orders/$id")" = 200 ] && return 0
    sleep 0.25
  done
  die "order $id is not in the read model after 60 s; see $STATE/projector.log and $STATE/outbox-relay.log"
}

main() {
  rm -rf "$STATE" && mkdir -p "$STATE/docs" "$STATE/reports"
  local py
  py=$("$ROOT/deploy/local/tools.sh" python)
  log "building the service binaries"
  (cd "$ROOT" && CARGO_TARGET_DIR=$("$ROOT/deploy/local/target-dir.sh") ${CARGO:-cargo} build --workspace --bins --locked --quiet)
  "$ROOT/deploy/local/infra.sh" namespace create "$NS" >/dev/null
  trap cleanup EXIT
  namespace_start_all "$NS" "$STATE" "$BIN" "${SERVICES[@]}" || die "the services did not all become ready"
  local entry name port
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*} port=${entry##*:}
    curl -sf --max-time 10 "http://127.0.0.1:$port/openapi.json" -o "$STATE/docs/$name.json" ||
      die "$name does not serve /openapi.json"
  done
  seed
  log "validating the five documents (openapi-spec-validator)"
  "$py/openapi-spec-validator" "$STATE"/docs/*.json

  local failed=0 cases=0 summary n
  for entry in "${SERVICES[@]:0:FUZZED}"; do
    name=${entry%%:*} port=${entry##*:}
    log "fuzzing $name with Schemathesis ($MAX_EXAMPLES cases per operation and phase, seed $SEED)"
    # Run from the state directory: Schemathesis keeps a cache of what it found in the
    # working directory (.schemathesis/), which belongs to the run, not to the clone.
    if ! (cd "$STATE" && "$py/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
      --phases examples,coverage,fuzzing,stateful --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
      --generation-database none \
      --request-timeout 15 --workers 1 --no-color \
      --report junit --report-dir "$STATE/reports/$name") >"$STATE/$name.schemathesis.txt" 2>&1; then
      cat "$STATE/$name.schemathesis.txt" >&2
      failed=1
    fi
    summary=$(grep -A1 -E '^Test cases:' "$STATE/$name.schemathesis.txt" | tail -1 | xargs || true)
    log "$name: ${summary:-no summary, see $STATE/$name.schemathesis.txt}"
    n=$(grep -oE '[0-9]+ generated' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
    cases=$((cases + n))
  done
  [ "$failed" = 0 ] || die "Schemathesis found answers the documents do not declare (above); logs in $STATE"
  [ "$cases" -gt 0 ] || die "Schemathesis ran no test case; see $STATE/*.schemathesis.txt"
  log "passed: $cases generated cases against three APIs, nothing found"
}

main "$@"

#!/usr/bin/env bash
# The main job of `make demo`, run after `make run` (infrastructure up, the five services
# ready): sets the saga's stock, drives a workload of orders through the command API and
# shows what the query API answers, what the saga did (shipped, cancelled out of stock),
# the inventory, and how long commands took to become visible. The driver is
# crates/demo (binary orders-demo, built by `make build`); its settings come from the
# environment: DEMO_ORDERS (1000), DEMO_USERS (50), DEMO_CONCURRENCY (16),
# DEMO_VISIBILITY_TIMEOUT (30s), COMMANDS_URL, QUERIES_URL, PROCESSOR_URL (the local defaults).
# Last, the reconciliation (orders-load reconcile) checks what the services derived
# against the event store.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$("$ROOT/deploy/local/target-dir.sh")/${PROFILE:-debug}

echo
echo "== Services"
"$ROOT/deploy/local/services.sh" status
echo
for tool in orders-demo orders-load; do
  [ -x "$BIN/$tool" ] || {
    echo "$BIN/$tool is missing; build it with \`make build\`" >&2
    exit 1
  }
done
"$BIN/orders-demo"
echo
# Then everything derived (read model, saga, windows, the orders topic) against the event
# store: crates/load, `orders-load reconcile`; it fails on any difference.
"$BIN/orders-load" reconcile
echo
echo "Logs: .local/services/. Stop the services with \`make stop\`, everything with \`make down\`."

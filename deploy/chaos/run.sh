#!/usr/bin/env bash
# make chaos: the five services under load while things break, then the reconciliation.
#
# The services run in a namespace of their own (databases chaos_*, topics chaos.*, ports
# 29080-29084; see deploy/local/namespace-services.sh), watched by this script as a
# supervisor would: a service that exits, or is killed, is started again. While
# `orders-load run` drives CHAOS_ORDERS orders at CHAOS_RATE orders/s, the script, in a
# random order with random gaps:
#   - SIGKILLs each of the five services CHAOS_KILLS times (restarting it at once);
#   - SIGKILLs the Kafka broker, then starts it again, CHAOS_INFRA_KILLS times;
#   - SIGKILLs PostgreSQL (the postmaster and its backends, as a crash of its machine
#     would), then starts it again, CHAOS_INFRA_KILLS times;
#   - puts poison on chaos.orders and chaos.order-commands (orders-load poison inject):
#     garbage bytes, a valid envelope of an unknown case, an oversized record.
# After each fault it measures how long the system took to recover: until a command is
# accepted again, and until the read model shows a command sent after the fault.
# Then it lets the system settle and checks:
#   - the load generator's own account: every command accepted in the end (retried with
#     its idempotency key while the system was down) and seen in the read model (paid
#     orders shipped later than the driver waited are reported; the reconciliation
#     checks that they were shipped);
#   - orders-load reconcile: the read model, the saga, the windows and the orders topic
#     against the event store: 0 lost, 0 applied twice;
#   - orders-load poison check: each poison record dead-lettered with its reason by
#     each consumer of its topic (told apart by their dlq.consumer header).
# A report goes to .local/chaos/report.md, the logs to .local/chaos/.
#
# Settings: CHAOS_ORDERS (20000), CHAOS_RATE (50), CHAOS_KILLS (3), CHAOS_INFRA_KILLS
# (2), CHAOS_SEED (random), PROFILE (debug: the binaries of `make build`), CHAOS_KEEP=1
# (keep the namespace's databases and topics afterwards).
# CI runs a short one: CHAOS_ORDERS=3000 CHAOS_RATE=30 CHAOS_KILLS=1 CHAOS_INFRA_KILLS=1.
# It kills the shared local Kafka and PostgreSQL: run nothing else against them meanwhile.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=${ORDERS_LOCAL_DIR:-$ROOT/.local}
STATE=$LOCAL/chaos
BIN=$("$ROOT/deploy/local/target-dir.sh")/${PROFILE:-debug}
NS=chaos
ORDERS=${CHAOS_ORDERS:-20000}
RATE=${CHAOS_RATE:-50}
KILLS=${CHAOS_KILLS:-3}
INFRA_KILLS=${CHAOS_INFRA_KILLS:-2}
SEED=${CHAOS_SEED:-$RANDOM}
SERVICES=(command-service:29080 projector:29081 outbox-relay:29082 order-processor:29083 stats-aggregator:29084)
COMMANDS=http://127.0.0.1:29080
QUERIES=http://127.0.0.1:29081

# shellcheck source=deploy/local/namespace-services.sh
. "$ROOT/deploy/local/namespace-services.sh"

log() { printf '[chaos] %(%H:%M:%S)T %s\n' -1 "$*" | tee -a "$STATE/chaos.log"; }
die() {
  printf '[chaos] ERROR: %s\n' "$*" | tee -a "$STATE/chaos.log" >&2
  exit 1
}

declare -A PID PORT
LOAD_PID=
RESTARTS=0
ACCEPTED=
VISIBLE=

port_of() {
  local entry
  for entry in "${SERVICES[@]}"; do [ "${entry%%:*}" = "$1" ] && echo "${entry##*:}"; done
}

start() {
  namespace_start "$NS" "$1" "${PORT[$1]}" "$STATE/$1.log" "$BIN"
  PID[$1]=$NAMESPACE_PID
}

# The supervisor's round: a service that is not running is started again.
supervise() {
  local entry name rc
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      rc=0
      wait "${PID[$name]}" 2>/dev/null || rc=$?
      log "$name exited by itself (status $rc); starting it again"
      RESTARTS=$((RESTARTS + 1))
      start "$name"
    fi
  done
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

wait_ready() {
  local name=$1 i
  for ((i = 0; i < 720; i++)); do
    [ "$(http_status "http://127.0.0.1:${PORT[$name]}/readyz")" = 200 ] && return 0
    supervise
    sleep 0.25
  done
  die "$name is not ready after 180 s; see $STATE/$name.log"
}

cleanup() {
  set +e
  [ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null
  namespace_stop "${PID[@]}"
  # Leave the infrastructure running, as it was found, without the namespace (unless
  # CHAOS_KEEP=1, to look into its databases and topics).
  "$ROOT/deploy/local/infra.sh" up >>"$STATE/infra.log" 2>&1 || true
  [ "${CHAOS_KEEP:-0}" = 1 ] || "$ROOT/deploy/local/infra.sh" namespace delete "$NS" >>"$STATE/infra.log" 2>&1 || true
}

# Seconds since the epoch, with milliseconds.
now() { date +%s.%3N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# After a fault at $1: seconds until a command is accepted (ACCEPTED), then until the read
# model shows a command sent after the fault (VISIBLE), a probe order of user chaos-probe.
# Runs in this shell (not in a subshell): its supervisor rounds restart services.
recovery() {
  local t0=$1 body id headers i
  ACCEPTED="" VISIBLE=""
  for ((i = 0; i < 1200; i++)); do
    supervise
    body=$(curl -s --max-time 5 -X POST -H 'Content-Type: application/json' \
      -d '{"user_id": "chaos-probe", "currency": "EUR", "items": [{"sku": "probe", "quantity": 1, "unit_price_minor": 100}]}' \
      "$COMMANDS/commands/orders" || true)
    id=$(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' <<<"$body")
    if [ -n "$id" ]; then
      ACCEPTED=$(since "$t0")
      break
    fi
    sleep 0.25
  done
  [ -n "$ACCEPTED" ] || die "no command accepted 300 s after the fault; see $STATE/*.log"
  for ((i = 0; i < 1200; i++)); do
    supervise
    headers=$(curl -s -D - -o /dev/null --max-time 5 "$QUERIES/queries/orders/$id?min_version=1" || true)
    if grep -q '^HTTP/[0-9.]* 200' <<<"$headers" && ! grep -qi '^x-view-stale' <<<"$headers"; then
      VISIBLE=$(since "$t0")
      break
    fi
    sleep 0.25
  done
  [ -n "$VISIBLE" ] || die "the probe order $id is not in the read model 300 s after the fault"
}

kill_service() {
  local name=$1 pid=${PID[$1]}
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  start "$name"
}

# The broker and the database are killed, then started again by infra.sh in the
# background (INFRA_PID) while recovery() probes: commands go on being accepted while
# Kafka is down (the outbox holds them), not while PostgreSQL is.
INFRA_PID=
restart_infra() {
  (
    sleep $((RANDOM % 3 + 1))
    "$ROOT/deploy/local/infra.sh" up >>"$STATE/infra.log" 2>&1
  ) &
  INFRA_PID=$!
}

wait_infra() {
  wait "$INFRA_PID" || die "$1 did not start again; see $STATE/infra.log"
  INFRA_PID=
}

# Waits until process $1 is gone (or a zombie: dead, not yet reaped), at most 30 s.
gone() {
  local i state
  for ((i = 0; i < 300; i++)); do
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$state" = Z ] && return 0
    sleep 0.1
  done
  die "process $1 is still there 30 s after its SIGKILL"
}

kill_kafka() {
  local pid
  pid=$(cat "$LOCAL/kafka/kafka.pid")
  kill -KILL "$pid"
  gone "$pid"
  restart_infra
}

# The postmaster is stopped first, so that it forks no backend between the two kills.
kill_postgres() {
  local pid
  pid=$(head -n 1 "$LOCAL/postgres/data/postmaster.pid")
  kill -STOP "$pid"
  pkill -KILL -P "$pid" || true
  kill -KILL "$pid"
  gone "$pid"
  restart_infra
}

main() {
  rm -rf "$STATE" && mkdir -p "$STATE"
  RANDOM=$SEED
  local entry name
  for entry in "${SERVICES[@]}"; do PORT[${entry%%:*}]=${entry##*:}; done
  [ -x "$BIN/orders-load" ] || die "$BIN/orders-load is missing; build it with \`make build\`"
  "$ROOT/deploy/local/infra.sh" namespace create "$NS" >>"$STATE/infra.log"
  trap cleanup EXIT
  for entry in "${SERVICES[@]}"; do start "${entry%%:*}"; done
  for entry in "${SERVICES[@]}"; do wait_ready "${entry%%:*}"; done
  log "five services ready (namespace $NS, seed $SEED); $ORDERS orders at $RATE/s"

  # The faults, shuffled.
  local faults=() i
  for entry in "${SERVICES[@]}"; do
    for ((i = 0; i < KILLS; i++)); do faults+=("${entry%%:*}"); done
  done
  for ((i = 0; i < INFRA_KILLS; i++)); do faults+=(kafka postgres); done
  faults+=(poison)
  mapfile -t faults < <(printf '%s\n' "${faults[@]}" | shuf --random-source=<(yes "$SEED"))

  # shellcheck disable=SC2046 # namespace_urls prints NAME=value words
  local urls=($(namespace_urls "$NS"))
  env COMMANDS_URL=$COMMANDS QUERIES_URL=$QUERIES PROCESSOR_URL=http://127.0.0.1:29083 \
    "$BIN/orders-load" run --orders "$ORDERS" --rate "$RATE" --retry-for 300s --visibility-timeout 600s \
    --summary "$STATE/load.json" >"$STATE/load.log" 2>&1 &
  LOAD_PID=$!
  # Spread the faults over the run: one every duration / (faults + 1) seconds, give or take.
  local gap
  gap=$(awk -v o="$ORDERS" -v r="$RATE" -v f="${#faults[@]}" 'BEGIN { g = o / r / (f + 1); printf "%d", (g < 2 ? 2 : g) }')
  printf '| fault | at (s) | command accepted after (s) | read model caught up after (s) |\n|---|---|---|---|\n' >"$STATE/faults.md"
  local started fault t0 during
  started=$(now)
  for fault in "${faults[@]}"; do
    sleep $((gap / 2 + RANDOM % (gap + 1)))
    supervise
    during="during"
    kill -0 "$LOAD_PID" 2>/dev/null || during="after"
    t0=$(now)
    case $fault in
      kafka) log "SIGKILL the Kafka broker ($during the load)"; kill_kafka ;;
      postgres) log "SIGKILL PostgreSQL ($during the load)"; kill_postgres ;;
      poison)
        log "poison on $NS.orders and $NS.order-commands"
        env "${urls[@]}" "$BIN/orders-load" poison inject --file "$STATE/poison.json" >>"$STATE/chaos.log" 2>&1 ||
          die "could not inject the poison; see $STATE/chaos.log"
        ;;
      *) log "SIGKILL $fault ($during the load)"; kill_service "$fault" ;;
    esac
    recovery "$t0"
    case $fault in kafka) wait_infra Kafka ;; postgres) wait_infra PostgreSQL ;; esac
    log "  recovered: a command accepted after $ACCEPTED s, the read model caught up after $VISIBLE s"
    printf '| %s | %s | %s | %s |\n' "$fault" "$(awk -v a="$started" -v b="$t0" 'BEGIN { printf "%.0f", b - a }')" \
      "$ACCEPTED" "$VISIBLE" >>"$STATE/faults.md"
  done
  log "all faults done; waiting for the load to finish"
  local load_rc=0
  while kill -0 "$LOAD_PID" 2>/dev/null; do supervise; sleep 1; done
  wait "$LOAD_PID" || load_rc=$?
  LOAD_PID=
  tail -n 16 "$STATE/load.log" | tee -a "$STATE/chaos.log"
  log "reconciling (orders-load reconcile: waits up to 10 min for the system to settle)"
  local reconcile_rc=0 poison_rc=0
  env "${urls[@]}" "$BIN/orders-load" reconcile --settle 600s >"$STATE/reconcile.txt" 2>"$STATE/reconcile.log" || reconcile_rc=$?
  tail -n 60 "$STATE/reconcile.txt" | tee -a "$STATE/chaos.log"
  env "${urls[@]}" "$BIN/orders-load" poison check --file "$STATE/poison.json" >"$STATE/poison.txt" 2>&1 || poison_rc=$?
  tee -a "$STATE/chaos.log" <"$STATE/poison.txt"
  {
    echo "# Chaos run"
    echo
    echo "$ORDERS orders at $RATE/s; each service SIGKILLed $KILLS times, Kafka and PostgreSQL $INFRA_KILLS times each; seed $SEED; $RESTARTS exits of a service by itself (restarted)."
    echo
    cat "$STATE/faults.md"
    echo
    echo '```'
    tail -n 16 "$STATE/load.log"
    echo
    cat "$STATE/reconcile.txt"
    echo
    cat "$STATE/poison.txt"
    echo '```'
  } >"$STATE/report.md"
  log "report: $STATE/report.md"
  # The load generator's own account: every command accepted in the end (retried with its
  # idempotency key) and seen in the read model. A paid order the saga ships later than
  # the driver waited (an overloaded saga falling behind) is reported, not failed: the
  # reconciliation checks that it was shipped in the end.
  local failed not_visible
  failed=$(summary_count "$STATE/load.json" failed) && not_visible=$(summary_count "$STATE/load.json" not_visible) ||
    die "the load generator left no summary (status $load_rc); see $STATE/load.log"
  [ "$failed" = 0 ] && [ "$not_visible" = 0 ] ||
    die "the load generator saw $failed commands fail and $not_visible not become visible (status $load_rc); see $STATE/load.log"
  [ "$reconcile_rc" = 0 ] || die "the reconciliation found differences; see $STATE/reconcile.txt"
  [ "$poison_rc" = 0 ] || die "poison was not dead-lettered; see $STATE/poison.txt"
  log "passed: nothing lost, nothing applied twice, every poison record dead-lettered"
}

main "$@"

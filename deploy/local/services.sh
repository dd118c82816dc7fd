#!/usr/bin/env bash
# Runs the five services in the background against the local infrastructure
# (deploy/local/infra.sh), each with its default configuration; logs and pid files in
# .local/services/.
#
# Usage: deploy/local/services.sh start|stop|status
#   start   start the services that are not running (binaries from deploy/local/target-dir.sh,
#           built by `make build`), then wait until each answers /healthz and /readyz.
#   stop    SIGTERM each service, wait for its graceful shutdown, SIGKILL after 40 s.
#   status  each service's pid and readiness.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}/services
BIN=$("$ROOT/deploy/local/target-dir.sh")/${PROFILE:-debug}
# name:port of each service's HTTP or admin server (their defaults).
SERVICES=(command-service:8080 projector:8081 outbox-relay:8082 order-processor:8083 stats-aggregator:8084)

log() { printf '[services] %s\n' "$*"; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

pid_of() {
  local pid
  pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
  # The running binary, even when cargo has re-linked it since (the link then ends in " (deleted)").
  local exe
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$BIN/$1" ] || return 1
  echo "$pid"
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1$2" || true; }

start() {
  mkdir -p "$STATE"
  local entry name port pid
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}
    [ -x "$BIN/$name" ] || die "$BIN/$name is missing; build it with \`make build\`"
    if pid=$(pid_of "$name"); then
      log "$name already running (pid $pid)"
      continue
    fi
    log "starting $name (log: $STATE/$name.log)"
    # The public APIs without authentication: this is a developer's machine (AUTH=jwt
    # with AUTH_JWKS, AUTH_ISSUER and AUTH_AUDIENCE in the environment turns it on).
    AUTH=${AUTH:-off} LOG_FORMAT=${LOG_FORMAT:-json} nohup setsid "$BIN/$name" >>"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
  done
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*} port=${entry##*:}
    wait_for "$name" "$port" /healthz 20
    wait_for "$name" "$port" /readyz 60
  done
  status
}

wait_for() {
  local name=$1 port=$2 path=$3 seconds=$4 i
  for ((i = 0; i < seconds * 4; i++)); do
    [ "$(http_status "$port" "$path")" = 200 ] && return 0
    if ! pid_of "$name" >/dev/null; then
      tail -n 20 "$STATE/$name.log" >&2 || true
      die "$name exited while starting; see $STATE/$name.log"
    fi
    sleep 0.25
  done
  curl -s --max-time 5 "http://127.0.0.1:$port$path" >&2 || true
  die "$name does not answer 200 on $path after $seconds s; see $STATE/$name.log"
}

stop() {
  local entry name pid pids=()
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}
    if pid=$(pid_of "$name"); then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid"
      pids+=("$name:$pid")
    fi
  done
  local item i
  for item in "${pids[@]}"; do
    name=${item%%:*} pid=${item##*:}
    for ((i = 0; i < 160; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within 40 s; killing it"
      kill -KILL "$pid"
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  local entry name port pid rc=0
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*} port=${entry##*:}
    if pid=$(pid_of "$name"); then
      printf '[services] %-17s pid %-7s http://127.0.0.1:%s  healthz %s  readyz %s\n' \
        "$name" "$pid" "$port" "$(http_status "$port" /healthz)" "$(http_status "$port" /readyz)"
    else
      printf '[services] %-17s not running\n' "$name"
      rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

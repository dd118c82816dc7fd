# Sourced by the scripts that run the five services in a namespace of their own
# (deploy/local/infra.sh namespace create NS: databases NS_*, topics NS.*): make
# api-test (deploy/api/test.sh) and make chaos (deploy/chaos/run.sh).
#
# namespace_env NS NAME PORT
#   the environment (NAME=value words) of service NAME in namespace NS, its HTTP or
#   admin server on 127.0.0.1:PORT, against the local Kafka and PostgreSQL.
# namespace_urls NS
#   the same namespace for orders-load: its databases and topics (NAME=value words).
# summary_count FILE NAME
#   count NAME of an orders-load run summary (`run --summary FILE`); fails when absent.

NAMESPACE_PG=${NAMESPACE_PG:-postgres://postgres@127.0.0.1:${PG_PORT:-15432}}

namespace_env() {
  local ns=$1 name=$2 port=$3 pg=$NAMESPACE_PG
  local common=(KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info} SHUTDOWN_TIMEOUT=10s)
  case $name in
    command-service) echo "${common[@]}" HTTP_ADDR=127.0.0.1:$port DATABASE_URL=$pg/${ns}_orders_write \
      ORDERS_TOPIC=$ns.orders ORDER_COMMANDS_TOPIC=$ns.order-commands DEAD_LETTER_TOPIC=$ns.dlq.order-commands \
      CONSUMER_GROUP=$ns.command-service ;;
    projector) echo "${common[@]}" HTTP_ADDR=127.0.0.1:$port DATABASE_URL=$pg/${ns}_orders_read \
      ORDERS_TOPIC=$ns.orders ORDER_STATS_TOPIC=$ns.order-stats DEAD_LETTER_TOPIC=$ns.dlq.orders \
      CONSUMER_GROUP=$ns.projector WINDOWS_CONSUMER_GROUP=$ns.projector-windows ;;
    order-processor) echo "${common[@]}" ADMIN_ADDR=127.0.0.1:$port DATABASE_URL=$pg/${ns}_order_processor \
      ORDERS_TOPIC=$ns.orders ORDER_COMMANDS_TOPIC=$ns.order-commands DEAD_LETTER_TOPIC=$ns.dlq.orders \
      CONSUMER_GROUP=$ns.order-processor ;;
    outbox-relay) echo "${common[@]}" ADMIN_ADDR=127.0.0.1:$port DATABASE_URL=$pg/${ns}_orders_write \
      ORDERS_TOPIC=$ns.orders ;;
    stats-aggregator) echo "${common[@]}" ADMIN_ADDR=127.0.0.1:$port ORDERS_TOPIC=$ns.orders \
      ORDER_STATS_TOPIC=$ns.order-stats DEAD_LETTER_TOPIC=$ns.dlq.orders APPLICATION_ID=$ns.stats-aggregator ;;
    *) echo "namespace_env: no service $name" >&2; return 1 ;;
  esac
}

namespace_urls() {
  local ns=$1 pg=$NAMESPACE_PG
  echo KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 WRITE_DATABASE_URL=$pg/${ns}_orders_write \
    READ_DATABASE_URL=$pg/${ns}_orders_read PROCESSOR_DATABASE_URL=$pg/${ns}_order_processor \
    ORDERS_TOPIC=$ns.orders ORDER_COMMANDS_TOPIC=$ns.order-commands \
    ORDERS_DEAD_LETTER_TOPIC=$ns.dlq.orders COMMANDS_DEAD_LETTER_TOPIC=$ns.dlq.order-commands
}

# namespace_start NS NAME PORT LOG BIN
#   starts service NAME of namespace NS in the background (binary BIN/NAME, output appended
#   to LOG); its pid in NAMESPACE_PID.
NAMESPACE_PID=
namespace_start() {
  local ns=$1 name=$2 port=$3 log=$4 bin=$5
  # shellcheck disable=SC2046 # namespace_env prints NAME=value words
  env $(namespace_env "$ns" "$name" "$port") "$bin/$name" >>"$log" 2>&1 </dev/null &
  NAMESPACE_PID=$!
}

# namespace_stop PID...: SIGTERM each, SIGKILL what still runs 20 s later.
namespace_stop() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# namespace_ready PORT SECONDS: whether 127.0.0.1:PORT answers /readyz with 200 within SECONDS.
namespace_ready() {
  local port=$1 seconds=$2 i
  for ((i = 0; i < seconds * 4; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/readyz" || true)" = 200 ] && return 0
    sleep 0.25
  done
  return 1
}

summary_count() {
  local value
  value=$(sed -n "s/^ *\"$2\": \([0-9][0-9]*\),\{0,1\}$/\1/p" "$1" 2>/dev/null | head -n 1)
  [ -n "$value" ] && echo "$value"
}

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
NAMESPACE_LOCAL=${ORDERS_LOCAL_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.local}

# namespace_secure_env NS NAME PORT: what namespace_start adds with NAMESPACE_SECURE=1, the
# service secured as in production (deploy/local/security.sh made what it needs;
# `infra.sh namespace acls NS` and `namespace roles NS` granted it): Kafka over SASL_SSL
# as the service's own user (SCRAM-SHA-512, its password file, the local CA),
# PostgreSQL over TLS (verify-full) as the service's own login role, its password from
# a file; bearer tokens on the public APIs (NAMESPACE_JWKS), their operations on admin
# ports (NAMESPACE_ADMIN_OFFSET), an admin token (NAMESPACE_ADMIN_TOKEN_FILE), when set.
namespace_secure_env() {
  local ns=$1 name=$2 port=${3:-0} role=${2//-/_} db
  echo KAFKA_BOOTSTRAP_SERVERS=localhost:9094 KAFKA_SECURITY_PROTOCOL=sasl_ssl KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \
    KAFKA_SASL_USERNAME=$name KAFKA_SASL_PASSWORD_FILE=$NAMESPACE_LOCAL/secrets/kafka/$name \
    KAFKA_SSL_CA_LOCATION=$NAMESPACE_LOCAL/tls/ca.pem
  # The public APIs check bearer tokens against NAMESPACE_JWKS, when set (orders-load
  # token makes the key set and the tokens), and serve their operations on an admin
  # port NAMESPACE_ADMIN_OFFSET above their own, when set.
  case $name in
    command-service | projector)
      [ -n "${NAMESPACE_JWKS:-}" ] &&
        echo AUTH=jwt AUTH_JWKS=$NAMESPACE_JWKS AUTH_ISSUER=https://issuer.local/ AUTH_AUDIENCE=orders-api
      [ -n "${NAMESPACE_ADMIN_OFFSET:-}" ] && echo "ADMIN_ADDR=127.0.0.1:$((port + NAMESPACE_ADMIN_OFFSET))"
      ;;
  esac
  # Every admin endpoint asks for the token in NAMESPACE_ADMIN_TOKEN_FILE, when set.
  [ -n "${NAMESPACE_ADMIN_TOKEN_FILE:-}" ] && echo "ADMIN_TOKEN_FILE=$NAMESPACE_ADMIN_TOKEN_FILE"
  case $name in
    command-service | outbox-relay) db=orders_write ;;
    projector) db=orders_read ;;
    order-processor) db=order_processor ;;
    *) return 0 ;;
  esac
  echo "DATABASE_URL=$(namespace_secure_url "$ns" "$role" "$db")"
}

# namespace_secure_url NS ROLE DATABASE: ROLE's URL to NS_DATABASE, TLS verify-full.
namespace_secure_url() {
  echo "postgres://$1_$2@localhost:${PG_PORT:-15432}/$1_$3?sslmode=verify-full&sslrootcert=$NAMESPACE_LOCAL/tls/ca.pem&password_file=$NAMESPACE_LOCAL/secrets/postgres/$1_$2"
}

namespace_env() {
  local ns=$1 name=$2 port=$3 pg=$NAMESPACE_PG
  local common=(KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info} SHUTDOWN_TIMEOUT=10s
    AUTH=off)
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
#   to LOG); its pid in NAMESPACE_PID. With NAMESPACE_SECURE=1, secured (see above).
NAMESPACE_PID=
namespace_start() {
  local ns=$1 name=$2 port=$3 log=$4 bin=$5
  local secure=()
  # Later words win: the secured settings replace the plaintext ones.
  # shellcheck disable=SC2207 # namespace_secure_env prints NAME=value words
  [ "${NAMESPACE_SECURE:-0}" = 1 ] && secure=($(namespace_secure_env "$ns" "$name" "$port"))
  # shellcheck disable=SC2046 # namespace_env prints NAME=value words
  env $(namespace_env "$ns" "$name" "$port") "${secure[@]}" "$bin/$name" >>"$log" 2>&1 </dev/null &
  NAMESPACE_PID=$!
}

# namespace_start_all NS STATE BIN NAME:PORT...
#   starts each service of namespace NS (namespace_start; its log STATE/NAME.log), its
#   pid appended to NAMESPACE_PIDS, then waits until each answers /readyz (180 s each);
#   fails, saying which service and what its /readyz answered, when one does not.
NAMESPACE_PIDS=()
namespace_start_all() {
  local ns=$1 state=$2 bin=$3 entry name port
  shift 3
  for entry in "$@"; do
    name=${entry%%:*} port=${entry##*:}
    printf '[namespace %s] starting %s on 127.0.0.1:%s (log: %s)\n' "$ns" "$name" "$port" "$state/$name.log"
    namespace_start "$ns" "$name" "$port" "$state/$name.log" "$bin"
    NAMESPACE_PIDS+=("$NAMESPACE_PID")
  done
  for entry in "$@"; do
    name=${entry%%:*} port=${entry##*:}
    if ! namespace_ready "$port" 180; then
      printf '%s is not ready after 180 s: %s; see %s\n' "$name" \
        "$(curl -s --max-time 5 "http://127.0.0.1:$port/readyz")" "$state/$name.log" >&2
      return 1
    fi
  done
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

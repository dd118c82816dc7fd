#!/usr/bin/env bash
# The platform secured end to end (`make security-test`, part of `make test`): the five
# services in a namespace of their own (databases sec_*, topics sec.*, ports
# 27080-27084) run as they would in production, against the local servers' secured side
# (deploy/local/security.sh):
#   - Kafka over SASL_SSL (SCRAM-SHA-512, the local CA), each service as its own user,
#     allowed only what deploy/kafka-acls.txt grants it;
#   - PostgreSQL over TLS (verify-full), each service as its own login role without DDL,
#     the migrations applied beforehand by the databases' owner (the chart's migrate
#     jobs), every password read from a file;
#   - bearer JWTs on the public APIs (AUTH=jwt), from a stand-in identity provider
#     (`orders-load token`, a key made for the run);
#   - the operational endpoints of the public APIs on admin ports of their own
#     (27090, 27091), every admin endpoint behind an operator's token;
# then
#   1. orders driven through the whole flow (orders-load run, with an administrator's
#      token), and the reconciliation: every order in the read model, the saga's
#      effects and the stats windows match the event store;
#   2. what may not be done fails: a request without a token (401), a user reading
#      another's orders (403), an admin endpoint without the operator's token (401),
#      the API's port serving /metrics, a service's Kafka user writing a topic its ACLs do not
#      grant (an authorization error), a service's role reading another's tables,
#      changing the schema, reaching another service's database, or connecting without
#      TLS;
#   3. no secret in any log line: every password and token of the run is looked for in
#      every log.
# Logs in .local/security-test/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=${ORDERS_LOCAL_DIR:-$ROOT/.local}
STATE=$LOCAL/security-test
BIN=$("$ROOT/deploy/local/target-dir.sh")/debug
NS=sec
SERVICES=(command-service:27080 projector:27081 outbox-relay:27082 order-processor:27083 stats-aggregator:27084)
PG_PORT=${PG_PORT:-15432}

log() { printf '[security-test] %s\n' "$*"; }
die() {
  printf '[security-test] ERROR: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=deploy/local/namespace-services.sh
. "$ROOT/deploy/local/namespace-services.sh"

cleanup() {
  namespace_stop "${NAMESPACE_PIDS[@]}"
  "$ROOT/deploy/local/infra.sh" namespace delete "$NS" >/dev/null 2>&1 || true
}

# as_role ROLE DATABASE SQL [SSLMODE]: runs SQL as NS_ROLE on NS_DATABASE; prints what
# psql said (its errors included).
as_role() {
  PGPASSWORD=$(cat "$LOCAL/secrets/postgres/${NS}_$1") PGSSLMODE=${4:-verify-full} \
    PGSSLROOTCERT=$LOCAL/tls/ca.pem psql -X -q -tA -v ON_ERROR_STOP=1 -h localhost -p "$PG_PORT" \
    -U "${NS}_$1" -d "${NS}_$2" -c "$3" 2>&1 || true
}

# refused WHAT EXPECTED OUTPUT: fails unless OUTPUT contains EXPECTED.
refused() {
  grep -qF "$2" <<<"$3" || die "$1 was not refused with \"$2\"; got: $3"
  log "refused as it should be: $1 ($2)"
}

migrate() {
  local service=$1 db=$2
  log "migrating ${NS}_$db as ${NS}_owner ($service migrate)"
  # shellcheck disable=SC2046 # namespace_env prints NAME=value words
  env $(namespace_env "$NS" "$service" 0) DATABASE_URL="$(namespace_secure_url "$NS" owner "$db")" \
    "$BIN/$service" migrate >>"$STATE/migrate.log" 2>&1 || die "$service migrate failed; see $STATE/migrate.log"
}

main() {
  rm -rf "$STATE" && mkdir -p "$STATE"
  log "building the service binaries"
  (cd "$ROOT" && CARGO_TARGET_DIR=$("$ROOT/deploy/local/target-dir.sh") ${CARGO:-cargo} build --workspace --bins --locked --quiet)
  "$ROOT/deploy/local/infra.sh" namespace create "$NS" >/dev/null
  trap cleanup EXIT
  "$ROOT/deploy/local/infra.sh" namespace acls "$NS"
  "$ROOT/deploy/local/infra.sh" namespace roles "$NS"

  migrate command-service orders_write
  migrate projector orders_read
  migrate order-processor order_processor

  log "issuing the run's signing key, key set and tokens (orders-load token)"
  (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$STATE/signing.pem" 2>/dev/null)
  "$BIN/orders-load" token --key "$STATE/signing.pem" --jwks >"$STATE/jwks.json"
  (umask 077 && "$BIN/orders-load" token --key "$STATE/signing.pem" --subject orders-load --scope orders:admin \
    >"$STATE/admin.token" && "$BIN/orders-load" token --key "$STATE/signing.pem" --subject mallory >"$STATE/user.token" &&
    openssl rand -hex 32 >"$STATE/operator.token")

  log "starting the five services secured"
  NAMESPACE_SECURE=1 NAMESPACE_JWKS=$STATE/jwks.json NAMESPACE_ADMIN_OFFSET=10 \
    NAMESPACE_ADMIN_TOKEN_FILE=$STATE/operator.token namespace_start_all "$NS" "$STATE" "$BIN" "${SERVICES[@]}" ||
    die "the services did not all become ready"

  log "driving 200 orders through the secured services"
  # shellcheck disable=SC2046 # namespace_urls prints NAME=value words
  env COMMANDS_URL=http://127.0.0.1:27080 QUERIES_URL=http://127.0.0.1:27081 PROCESSOR_URL=http://127.0.0.1:27083 \
    API_TOKEN_FILE="$STATE/admin.token" PROCESSOR_TOKEN_FILE="$STATE/operator.token" "$BIN/orders-load" run --orders 200 --rate 40 --retry-for 120s --visibility-timeout 180s \
    --summary "$STATE/load.json" >"$STATE/load.log" 2>&1 || die "the load run failed; see $STATE/load.log"
  local failed not_visible
  failed=$(summary_count "$STATE/load.json" failed) && not_visible=$(summary_count "$STATE/load.json" not_visible) ||
    die "the load generator left no summary; see $STATE/load.log"
  [ "$failed" = 0 ] && [ "$not_visible" = 0 ] ||
    die "$failed commands failed and $not_visible did not become visible; see $STATE/load.log"
  # shellcheck disable=SC2046
  env $(namespace_urls "$NS") "$BIN/orders-load" reconcile --settle 300s >"$STATE/reconcile.txt" 2>"$STATE/reconcile.log" ||
    die "the reconciliation found differences; see $STATE/reconcile.txt"
  log "$(head -n 1 "$STATE/reconcile.txt")"

  log "checking what may not be done"
  local out status
  status=$(curl -s -o "$STATE/unauthenticated.json" -w '%{http_code}' --max-time 10 -X POST \
    -H 'Content-Type: application/json' -d '{"currency": "EUR", "items": [{"sku": "a", "quantity": 1, "unit_price_minor": 1}]}' \
    http://127.0.0.1:27080/commands/orders)
  [ "$status" = 401 ] || die "a command without a token was answered $status, not 401"
  log "refused as it should be: a command without a token (401)"
  status=$(curl -s -o "$STATE/forbidden.json" -w '%{http_code}' --max-time 10 \
    -H "Authorization: Bearer $(cat "$STATE/user.token")" http://127.0.0.1:27081/queries/users/someone-else/orders)
  [ "$status" = 403 ] || die "mallory reading another user's orders was answered $status, not 403"
  log "refused as it should be: a user reading another's orders (403)"
  # The admin endpoints: apart from the public APIs, behind the operator's token.
  http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
  [ "$(http_code http://127.0.0.1:27080/metrics)" = 404 ] || die "the command API's own port serves /metrics"
  [ "$(http_code http://127.0.0.1:27090/metrics)" = 401 ] || die "/metrics answered without the admin token"
  [ "$(http_code -H "Authorization: Bearer $(cat "$STATE/operator.token")" http://127.0.0.1:27090/metrics)" = 200 ] ||
    die "/metrics refused the admin token"
  [ "$(http_code -X PUT -H 'Content-Type: application/json' -d '{"available": 1}' http://127.0.0.1:27083/inventory/x)" = 401 ] ||
    die "the processor's inventory API took a change without the admin token"
  [ "$(http_code http://127.0.0.1:27091/readyz)" = 200 ] || die "the projector's probe needs no token"
  log "refused as it should be: the admin endpoints without the operator's token (401); the API's port serves none"
  # Errors the services log, with a token and a password in the request.
  curl -s -o /dev/null --max-time 10 -X POST -H "Authorization: Bearer $(cat "$STATE/user.token")" \
    -H 'Content-Type: application/json' -d "{\"password\": \"$(cat "$LOCAL/secrets/postgres/${NS}_owner")\"" \
    http://127.0.0.1:27080/commands/orders || true
  out=$(env $(NAMESPACE_SECURE=1 namespace_secure_env "$NS" projector) \
    "$BIN/orders-load" kafka-write --topic "$NS.orders" 2>&1 || true)
  refused "the projector's Kafka user writing $NS.orders" "Topic authorization failed" "$out"
  out=$(env $(NAMESPACE_SECURE=1 namespace_secure_env "$NS" projector) \
    "$BIN/orders-load" kafka-write --topic "$NS.dlq.orders" 2>&1 || true)
  grep -q "^written to $NS.dlq.orders" <<<"$out" || die "the projector's Kafka user could not write its dead letters: $out"
  refused "the relay's role reading the events" "permission denied for table events" \
    "$(as_role outbox_relay orders_write 'SELECT count(*) FROM events')"
  refused "the command service's role creating a table" "permission denied for schema public" \
    "$(as_role command_service orders_write 'CREATE TABLE intruder (id int)')"
  refused "the projector's role reaching the event store's database" "permission denied for database" \
    "$(as_role projector orders_write 'SELECT 1')"
  refused "the command service's role reaching the read model's database" "permission denied for database" \
    "$(as_role command_service orders_read 'SELECT 1')"
  refused "a service's role without TLS" "pg_hba.conf rejects connection" \
    "$(as_role projector orders_read 'SELECT 1' disable)"
  out=$(as_role outbox_relay orders_write 'SELECT count(*) FROM outbox')
  [ "$out" = 0 ] || die "the relay's role cannot read the outbox, or it is not empty: $out"

  # Least privilege, but enough: no service was refused anything it does, up to its
  # shutdown (a missing ACL or grant shows in its log even where it copes).
  namespace_stop "${NAMESPACE_PIDS[@]}"
  NAMESPACE_PIDS=()
  local refused_log
  refused_log=$(grep -lE 'AuthorizationFailed|Authorization failed|permission denied|SQLSTATE 42501' \
    "$STATE"/{command-service,projector,outbox-relay,order-processor,stats-aggregator}.log || true)
  [ -z "$refused_log" ] || die "a service was refused something it needs; see $refused_log"

  log "looking for the run's secrets in its logs"
  local secret file leaks=0
  for file in "$LOCAL"/secrets/kafka/* "$LOCAL"/secrets/postgres/"${NS}"_* "$STATE"/*.token; do
    secret=$(cat "$file")
    if grep -rlF --include='*.log' -- "$secret" "$STATE" "$LOCAL/kafka" "$LOCAL/postgres" 2>/dev/null; then
      log "the secret of $file is in the files above"
      leaks=1
    fi
  done
  [ "$leaks" = 0 ] || die "secrets found in logs"
  log "passed: the flow secured end to end, each forbidden access refused, no secret in the logs"
}

main "$@"

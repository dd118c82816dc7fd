#!/usr/bin/env bash
# Local infrastructure for development and tests, started from the repository's own files:
#   - Apache Kafka, one KRaft node (broker and controller in one process) on 127.0.0.1:9092,
#     its jars resolved from Maven Central by deploy/local/kafka/pom.xml;
#   - PostgreSQL (Debian's package), a project-local cluster on 127.0.0.1:$PG_PORT with one
#     database per owning service.
# Everything it starts lives under .local/ (ignored by git): data, logs, pid files.
#
# Usage: deploy/local/infra.sh up|down|status
#   up      install what is missing, start both, create databases and topics; idempotent,
#           and recovers after a crash (stale pid files, a killed broker).
#   down    stop only what this script started.
#   status  say what runs, where, and where its log is; exit 1 when something is down.
#   namespace create|delete NAME
#           an isolated copy of the databases and topics, named NAME_<database> and
#           NAME.<topic>, made anew or deleted (both running already).
#   namespace acls NAME
#           the services' Kafka ACLs for that namespace's topics, groups and
#           transactional ids (deploy/kafka-acls.txt; see deploy/local/security.sh).
#   namespace roles NAME
#           its PostgreSQL roles: NAME_owner owns its databases, one login role per
#           service with only what it needs (see deploy/local/security.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}
KAFKA_HOME=$STATE/kafka
PG_HOME=$STATE/postgres
# Below Linux's ephemeral ports (32768-60999): a client that keeps reconnecting while the
# server is down can be given the server's own port as its source port and connect to
# itself (TCP simultaneous open); that socket, then its TIME_WAIT, holds the port and
# the restarted server fails with "Address already in use" (seen with 55432 under make
# chaos). The same goes for every port a service of this project listens on.
PG_PORT=${PG_PORT:-15432}
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/local/kafka/pom.xml")
# Keyed by the pom's content: editing the pom resolves the jars anew.
KAFKA_LIBS=$KAFKA_HOME/libs-$(md5sum <"$ROOT/deploy/local/kafka/pom.xml" | cut -c1-12)
DATABASES=(orders_write orders_read order_processor)
KAFKA_HEAP=${KAFKA_HEAP:-1g}

log() { printf '[infra] %s\n' "$*"; }
die() {
  printf '[infra] ERROR: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=deploy/local/apt.sh
. "$ROOT/deploy/local/apt.sh"
# shellcheck source=deploy/local/security.sh
. "$ROOT/deploy/local/security.sh"

# PostgreSQL refuses to run as root: as root, its commands run as the 'postgres' user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Prerequisites: Debian packages, installed only when missing.
# ---------------------------------------------------------------------------------------------
pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

ensure_prerequisites() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  pg_bindir >/dev/null || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v curl >/dev/null || missing+=(curl)
  # To build the services: a C toolchain for librdkafka, which rdkafka builds from source.
  command -v cc >/dev/null && command -v c++ >/dev/null && command -v make >/dev/null || missing+=(build-essential)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  # librdkafka with TLS, and PostgreSQL's TLS connector: Debian's OpenSSL.
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  pg_bindir >/dev/null || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_data() { echo "$PG_HOME/data"; }

# As root, the 'postgres' user must be able to reach the data directory. When the clone sits
# under a folder it cannot traverse (for example /root), the cluster lives in /var/lib instead
# and .local/postgres is a link to it.
pg_prepare_home() {
  [ -e "$PG_HOME" ] && return 0
  mkdir -p "$STATE"
  if [ "$(id -u)" -ne 0 ]; then
    mkdir -p "$PG_HOME"
    return 0
  fi
  mkdir -p "$PG_HOME"
  chown postgres:postgres "$PG_HOME"
  if ! runuser -u postgres -- test -w "$PG_HOME"; then
    rmdir "$PG_HOME"
    local elsewhere
    elsewhere=/var/lib/orders-platform/$(printf '%s' "$ROOT" | md5sum | cut -c1-12)/postgres
    log "the postgres user cannot reach $STATE; keeping the cluster in $elsewhere"
    mkdir -p "$elsewhere"
    chown postgres:postgres "$elsewhere"
    ln -s "$elsewhere" "$PG_HOME"
  fi
}

# Whether process $1 runs: a zombie (killed, not yet reaped by its parent) does not.
# kill -0 and `pg_ctl status` count a zombie as running; this machine's init can take
# minutes to reap an orphaned postmaster that was SIGKILLed (make chaos does that).
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

pg_lock_file() { echo "$(pg_data)/postmaster.pid"; }

pg_running() {
  local pid
  pid=$(head -n 1 "$(pg_lock_file)" 2>/dev/null) && [ -n "$pid" ] && alive "$pid" &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] && as_pg "$(pg_bindir)/pg_ctl" -D "$(pg_data)" status >/dev/null 2>&1
}

pg_up() {
  local bin
  bin=$(pg_bindir)
  pg_prepare_home
  if [ ! -f "$(pg_data)/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $(pg_data)"
    as_pg "$bin/initdb" -D "$(pg_data)" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_HOME/initdb.log" 2>&1 ||
      die "initdb failed; see $PG_HOME/initdb.log"
    cat >>"$(pg_data)/postgresql.conf" <<EOF

# --- orders-platform local settings (deploy/local/infra.sh) ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 400
shared_buffers = 256MB
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
EOF
  fi
  tls_materials
  local options
  options="-p $PG_PORT $(pg_security_options)"
  if pg_running && [ "$(psql_admin -tAc 'show ssl' 2>/dev/null)" = off ]; then
    log "restarting PostgreSQL: it runs without the TLS settings of this version of infra.sh"
    as_pg "$bin/pg_ctl" -D "$(pg_data)" -m fast -w -t 60 stop >/dev/null || die "PostgreSQL did not stop"
  fi
  if pg_running; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
  else
    if port_open "$PG_PORT"; then
      die "port $PG_PORT is taken by a process this project did not start; free it or set PG_PORT"
    fi
    # The lock file of a postmaster that is gone: PostgreSQL removes it itself unless its
    # pid is still taken, by a zombie postmaster or a process that reused the pid, and
    # then refuses to start. The server's own check of its shared memory still stops
    # a start while a backend of the old server lives.
    if [ -f "$(pg_lock_file)" ]; then
      log "removing the lock file of a postmaster that no longer runs (pid $(head -n 1 "$(pg_lock_file)"))"
      rm -f "$(pg_lock_file)"
    fi
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (log: $PG_HOME/postgres.log)"
    # The port and the TLS settings are given at each start, so a cluster made before
    # follows them.
    as_pg "$bin/pg_ctl" -D "$(pg_data)" -l "$PG_HOME/postgres.log" -o "$options" -w -t 60 start >/dev/null ||
      die "PostgreSQL did not start; see $PG_HOME/postgres.log"
  fi
  local i
  for i in $(seq 1 60); do
    psql_admin -c 'select 1' >/dev/null 2>&1 && break
    [ "$i" -eq 60 ] && die "PostgreSQL does not accept connections on 127.0.0.1:$PG_PORT; see $PG_HOME/postgres.log"
    sleep 0.5
  done
  local db
  for db in "${DATABASES[@]}"; do
    if [ "$(psql_admin -tAc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
      log "creating database $db"
      psql_admin -c "create database $db" >/dev/null
    fi
  done
}

psql_admin() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }

pg_down() {
  if [ -f "$(pg_data)/PG_VERSION" ] && pg_running; then
    log "stopping PostgreSQL"
    as_pg "$(pg_bindir)/pg_ctl" -D "$(pg_data)" -m fast -w -t 60 stop >/dev/null
  else
    log "PostgreSQL is not running"
  fi
}

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
JAVA_ARGS=(-Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$ROOT/deploy/local/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*")
kafka_java() { java "${JAVA_ARGS[@]}" "$@"; }

kafka_pid() {
  local pid
  pid=$(cat "$KAFKA_HOME/kafka.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  # Only a process that runs our server.properties counts: pids are reused.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$KAFKA_HOME/server.properties" || return 1
  echo "$pid"
}

kafka_fetch() {
  if [ ! -f "$KAFKA_LIBS/.complete" ]; then
    log "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
    rm -rf "$KAFKA_LIBS"
    mkdir -p "$KAFKA_HOME"
    mvn -q -B -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime "-DoutputDirectory=$KAFKA_LIBS" >"$KAFKA_HOME/maven.log" 2>&1 ||
      die "could not resolve Kafka's jars; see $KAFKA_HOME/maven.log"
    touch "$KAFKA_LIBS/.complete"
  fi
}

kafka_up() {
  kafka_fetch
  tls_materials
  kafka_properties
  if [ ! -f "$KAFKA_HOME/data/meta.properties" ]; then
    log "formatting Kafka storage in $KAFKA_HOME/data"
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    local scram=()
    mapfile -t scram < <(kafka_scram_format_args)
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$KAFKA_HOME/server.properties" "${scram[@]}" >"$KAFKA_HOME/format.log" 2>&1 ||
      die "formatting Kafka storage failed; see $KAFKA_HOME/format.log"
    echo "${KAFKA_USERS[*]}" >"$(kafka_scram_marker)"
  fi
  local pid
  if pid=$(kafka_pid); then
    log "Kafka already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
  else
    rm -f "$KAFKA_HOME/kafka.pid"
    if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT" || port_open "$KAFKA_SASL_PORT"; then
      die "port $KAFKA_PORT, $KAFKA_CONTROLLER_PORT or $KAFKA_SASL_PORT is taken by a process this project did not start"
    fi
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_HOME/kafka.log)"
    # In its own session, so that it outlives this shell and a Ctrl-C in the terminal;
    # the shell writes its own pid, then becomes the JVM.
    nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_HOME/kafka.pid" \
      java "${JAVA_ARGS[@]}" kafka.Kafka "$KAFKA_HOME/server.properties" \
      >>"$KAFKA_HOME/kafka.log" 2>&1 </dev/null &
    sleep 0.2
  fi
  kafka_wait
  kafka_topics
  kafka_scram_users
  kafka_acls
}

# Up to 3 minutes: after a crash the broker first recovers every partition's log (a
# minute here for some 270 partitions), and only then listens.
kafka_wait() {
  local i
  for i in $(seq 1 360); do
    if ! kafka_pid >/dev/null; then
      tail -n 30 "$KAFKA_HOME/kafka.log" >&2 || true
      die "Kafka exited while starting; see $KAFKA_HOME/kafka.log"
    fi
    if port_open "$KAFKA_PORT"; then return 0; fi
    sleep 0.5
  done
  die "Kafka does not accept connections on 127.0.0.1:$KAFKA_PORT after 180 s; see $KAFKA_HOME/kafka.log"
}

topic_tool() { kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"; }

# The topics of deploy/topics.txt that do not exist yet, their names prefixed with $1 (none by default).
kafka_topics() {
  local prefix=${1:-} existing
  existing=$(topic_tool --list 2>>"$KAFKA_HOME/topics.log") ||
    die "Kafka does not answer admin requests; see $KAFKA_HOME/kafka.log and $KAFKA_HOME/topics.log"
  local name partitions configs args
  while read -r name partitions configs; do
    case "$name" in '' | '#'*) continue ;; esac
    name=$prefix$name
    if grep -qxF "$name" <<<"$existing"; then continue; fi
    args=(--create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor 1)
    local kv
    for kv in ${configs//,/ }; do args+=(--config "$kv"); done
    log "creating topic $name ($partitions partitions${configs:+, $configs})"
    topic_tool "${args[@]}" >>"$KAFKA_HOME/topics.log" 2>&1 || die "creating topic $name failed; see $KAFKA_HOME/topics.log"
  done <"$ROOT/deploy/topics.txt"
}

# An isolated copy of the platform's state for one run of something (make k8s-test plays the
# chart in one): databases <ns>_<database> and topics <ns>.<topic>, made anew (what an earlier
# run left is deleted first) or deleted.
namespace_create() {
  local ns=$1 db
  namespace_delete "$ns"
  for db in "${DATABASES[@]}"; do
    log "creating database ${ns}_$db"
    psql_admin -c "create database ${ns}_$db" >/dev/null
  done
  kafka_topics "$ns."
}

# The services' Kafka ACLs for the namespace's names (deploy/kafka-acls.txt).
namespace_acls() { kafka_acls "$1"; }

# The namespace's PostgreSQL roles: an owner and one login role per service.
namespace_roles() { pg_roles "$1"; }

namespace_delete() {
  local ns=$1 db
  for db in "${DATABASES[@]}"; do
    PGOPTIONS='-c client_min_messages=warning' psql_admin -c "drop database if exists ${ns}_$db with (force)" >/dev/null
  done
  namespace_topics "$ns" || return 0
  log "deleting the topics $ns.*"
  topic_tool --delete --if-exists --topic "$ns\\..*" >>"$KAFKA_HOME/topics.log" 2>&1 ||
    die "deleting the topics $ns.* failed; see $KAFKA_HOME/topics.log"
  # Deletion completes in the background: wait until the names are free again.
  local i
  for i in $(seq 1 60); do
    namespace_topics "$ns" || return 0
    sleep 1
  done
  die "the topics $ns.* are still there 60 s after their deletion; see $KAFKA_HOME/kafka.log"
}

# Whether topics <ns>.* exist; dies when Kafka does not answer (rather than taking that for none).
namespace_topics() {
  local listed
  listed=$(topic_tool --list 2>>"$KAFKA_HOME/topics.log") ||
    die "Kafka does not answer admin requests; see $KAFKA_HOME/kafka.log and $KAFKA_HOME/topics.log"
  grep -q "^$1\." <<<"$listed"
}

kafka_down() {
  local pid i
  if pid=$(kafka_pid); then
    log "stopping Kafka (pid $pid)"
    kill -TERM "$pid"
    for i in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "Kafka did not stop within 60 s; killing it"
      kill -KILL "$pid"
    fi
  else
    log "Kafka is not running"
  fi
  rm -f "$KAFKA_HOME/kafka.pid"
}

# ---------------------------------------------------------------------------------------------
status() {
  local rc=0 pid
  if pid=$(kafka_pid) && port_open "$KAFKA_PORT"; then
    log "Kafka       up    pid $pid, 127.0.0.1:$KAFKA_PORT, log $KAFKA_HOME/kafka.log"
  else
    log "Kafka       down  (log $KAFKA_HOME/kafka.log)"
    rc=1
  fi
  if [ -f "$(pg_data)/PG_VERSION" ] && pg_running && port_open "$PG_PORT"; then
    log "PostgreSQL  up    127.0.0.1:$PG_PORT, databases ${DATABASES[*]}, log $PG_HOME/postgres.log"
  else
    log "PostgreSQL  down  (log $PG_HOME/postgres.log)"
    rc=1
  fi
  return $rc
}

case "${1:-}" in
  up)
    ensure_prerequisites
    mkdir -p "$KAFKA_HOME"
    pg_up
    kafka_up
    status
    ;;
  down)
    if [ -d "$STATE" ]; then
      kafka_down
      if pg_bindir >/dev/null; then pg_down; fi
    fi
    ;;
  status) status ;;
  namespace)
    case "${2:-}:${3:-}" in
      create:?* | delete:?* | acls:?* | roles:?*)
        # It names databases unquoted and starts topic patterns.
        [[ $3 =~ ^[a-z][a-z0-9_]*$ ]] || die "a namespace is lower-case letters, digits and _: '$3'"
        "namespace_$2" "$3"
        ;;
      *) die "usage: $0 namespace create|delete|acls|roles NAME" ;;
    esac
    ;;
  *)
    echo "usage: $0 up|down|status|namespace" >&2
    exit 2
    ;;
esac

# Sourced by deploy/local/infra.sh: the secured side of the local servers, made with the
# repository's own scripts and the servers' own tools.
#
#   - TLS: a private CA and one server certificate (DNS localhost, IP 127.0.0.1), made
#     with openssl in .local/tls, for Kafka's SASL_SSL listener (127.0.0.1:9094) and
#     PostgreSQL's TLS; ca.pem is what clients trust. other-ca.pem is a second CA that
#     signed nothing here: a client trusting only it must fail to connect.
#   - Kafka users: one per service, plus orders-test for the tests, each known to the
#     broker by SCRAM-SHA-256, SCRAM-SHA-512 (created with Kafka's ConfigCommand) and
#     PLAIN (the listener's JAAS). Each password is a file in .local/secrets/kafka/,
#     mode 0600, the way Kubernetes mounts a Secret: the services read it from there.
#   - Kafka ACLs (StandardAuthorizer): deploy/kafka-acls.txt, granted with Kafka's
#     AclCommand for the default topics at `make up`, and for a namespace's topics by
#     `infra.sh kafka-acls NS`. The PLAINTEXT listener (127.0.0.1:9092) stays what it
#     was: its principal, ANONYMOUS, is a super user (the tests and the admin tools use
#     it); everything on the SASL_SSL listener is checked.

TLS_DIR=$STATE/tls
SECRETS_DIR=$STATE/secrets
KAFKA_SASL_PORT=9094
# The services' Kafka users are their names; orders-test is the tests' own.
KAFKA_USERS=(command-service outbox-relay projector order-processor stats-aggregator orders-test)

# The CA, the server's certificate and key, and a second, unrelated CA; made once.
tls_materials() {
  if [ -f "$TLS_DIR/server.pem" ] && openssl x509 -checkend 604800 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || apt_install openssl
  log "making a local CA and a server certificate in $TLS_DIR (openssl)"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 0755 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=orders-platform local CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=an unrelated CA" \
      -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'extendedKeyUsage=serverAuth' \
      'keyUsage=critical,digitalSignature,keyEncipherment' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.pem 2>/dev/null
    # Kafka's PEM key store: the private key (PKCS#8, unencrypted) with its chain.
    cat server.key server.pem ca.pem >kafka-keystore.pem
    rm -f server.csr server.ext ca.srl other-ca.key
    chmod 0644 ca.pem other-ca.pem server.pem
  ) || die "making the TLS certificates failed"
}

# secret_file KIND NAME: the file holding NAME's password (made on first use, random).
secret_file() {
  local file=$SECRETS_DIR/$1/$2
  if [ ! -s "$file" ]; then
    mkdir -p "$SECRETS_DIR/$1"
    chmod 0700 "$SECRETS_DIR" "$SECRETS_DIR/$1"
    (umask 077 && openssl rand -hex 24 >"$file")
  fi
  echo "$file"
}

# The JAAS configuration of the SASL_SSL listener's PLAIN mechanism: every user with
# its password (the file it goes into, server.properties, is mode 0600).
kafka_plain_jaas() {
  local user entries=""
  for user in "${KAFKA_USERS[@]}"; do
    entries+=" user_$user=\"$(cat "$(secret_file kafka "$user")")\""
  done
  echo "org.apache.kafka.common.security.plain.PlainLoginModule required$entries;"
}

# server.properties from its template: data directory, TLS files, PLAIN users.
kafka_properties() {
  local jaas
  jaas=$(kafka_plain_jaas)
  (
    umask 077
    sed -e "s:@DATA_DIR@:$KAFKA_HOME/data:" -e "s:@TLS_DIR@:$TLS_DIR:" \
      -e "s:@SASL_PORT@:$KAFKA_SASL_PORT:g" "$ROOT/deploy/local/kafka/server.properties.in"
    echo "listener.name.sasl_ssl.plain.sasl.jaas.config=$jaas"
  ) >"$KAFKA_HOME/server.properties"
}

kafka_admin() { kafka_java "$1" --bootstrap-server "127.0.0.1:$KAFKA_PORT" "${@:2}"; }

# The users' SCRAM credentials: a new storage gets them when it is formatted
# (kafka_scram_format_args); a storage formatted before has them created with Kafka's
# ConfigCommand, one mechanism per request (it refuses two). A marker in the data
# directory remembers which users have them.
kafka_scram_marker() { echo "$KAFKA_HOME/data/.scram-users"; }

# The StorageTool arguments that give a new storage the users' credentials.
kafka_scram_format_args() {
  local user password mechanism
  for user in "${KAFKA_USERS[@]}"; do
    password=$(cat "$(secret_file kafka "$user")")
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      printf -- '--add-scram\n%s=[name=%s,password=%s]\n' "$mechanism" "$user" "$password"
    done
  done
}

kafka_scram_users() {
  local marker user mechanism password out
  marker=$(kafka_scram_marker)
  [ "$(cat "$marker" 2>/dev/null)" = "${KAFKA_USERS[*]}" ] && return 0
  log "creating the Kafka users ${KAFKA_USERS[*]} (SCRAM-SHA-256 and SCRAM-SHA-512)"
  for user in "${KAFKA_USERS[@]}"; do
    password=$(cat "$(secret_file kafka "$user")")
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      # Its errors repeat the command line: the password is masked before they are kept.
      if ! out=$(kafka_admin org.apache.kafka.tools.ConfigCommand --alter --entity-type users \
        --entity-name "$user" --add-config "$mechanism=[password=$password]" 2>&1); then
        printf '%s\n' "${out//$password/***}" >>"$KAFKA_HOME/security.log"
        die "creating the Kafka user $user failed; see $KAFKA_HOME/security.log"
      fi
    done
  done
  echo "${KAFKA_USERS[*]}" >"$marker"
}

# kafka_acls [NS]: the ACLs of deploy/kafka-acls.txt for the topics, groups and
# transactional ids of namespace NS (named NS.<name>; none: the default names). Granted
# once per namespace and table (a marker in Kafka's data directory).
kafka_acls() {
  local ns=${1:-} prefix="" table=$ROOT/deploy/kafka-acls.txt marker
  [ -n "$ns" ] && prefix=$ns.
  marker=$KAFKA_HOME/data/.acls-${ns:-default}-$(md5sum <"$table" | cut -c1-12)
  [ -f "$marker" ] && return 0
  log "granting the services' Kafka ACLs${ns:+ for namespace $ns} (deploy/kafka-acls.txt)"
  local user operations resource names pattern args op name
  while read -r user operations resource names pattern; do
    case "$user" in '' | '#'*) continue ;; esac
    args=(--add --allow-principal "User:$user" --resource-pattern-type "${pattern:-literal}")
    for op in ${operations//,/ }; do args+=(--operation "$op"); done
    for name in ${names//,/ }; do args+=("--$resource" "$prefix$name"); done
    kafka_admin org.apache.kafka.tools.AclCommand "${args[@]}" >>"$KAFKA_HOME/security.log" 2>&1 ||
      die "granting $user's ACLs failed; see $KAFKA_HOME/security.log"
  done <"$table"
  touch "$marker"
}

# PostgreSQL's TLS and client authentication, set at every start (so a cluster made
# before them gets them too): the server's certificate and key (copied where the
# postgres user owns them, the key mode 0600 as the server demands) and pg_hba.conf.
# Roles in orders_login (the services' login roles, made by `infra.sh namespace roles`)
# must come over TLS with their password; every other local connection (the postgres
# superuser of the tests and scripts) is trusted, as before.
pg_security_options() {
  local dir=$PG_HOME/tls
  mkdir -p "$dir"
  cp "$TLS_DIR/server.pem" "$TLS_DIR/ca.pem" "$dir/"
  (umask 077 && cp "$TLS_DIR/server.key" "$dir/server.key")
  cat >"$PG_HOME/pg_hba.conf" <<HBA
# Written by deploy/local/security.sh at each start of the local cluster.
# TYPE   DATABASE  USER           ADDRESS        METHOD
hostssl  all       +orders_login  127.0.0.1/32   scram-sha-256
host     all       +orders_login  127.0.0.1/32   reject
host     all       all            127.0.0.1/32   trust
HBA
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$dir" "$PG_HOME/pg_hba.conf"; fi
  echo "-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key -c ssl_ca_file=$dir/ca.pem -c hba_file=$PG_HOME/pg_hba.conf"
}

# The roles of the migrations (scheme in crates/eventstore/migrations/V4__least_privilege.sql):
# without login, each carrying one kind of client's privileges. Made here too, so that
# login roles can join them before the first migration.
PG_GROUP_ROLES=(orders_login orders_eventstore_writer orders_outbox_relay orders_outbox_writer orders_consumer
  orders_saga orders_projector)

# pg_roles NS: least privilege for namespace NS's databases. NS_owner owns the three
# databases and runs the migrations (DDL); each service gets a login role of its own
# (NS_command_service, NS_outbox_relay, NS_projector, NS_order_processor), a member of
# orders_login (TLS and a password, see pg_hba.conf) and of the roles of what it does,
# and may CONNECT only to its own database. Passwords: .local/secrets/postgres/<role>.
pg_roles() {
  local ns=$1 role password
  # The passwords go to psql on its standard input (not its command line, which any
  # local user may read), and the server is told to log none of these statements, even
  # failing ones.
  local sql="SET log_statement = 'none';
SET log_min_error_statement = panic;
"
  declare -A members=(
    [owner]=""
    [command_service]="orders_eventstore_writer"
    [outbox_relay]="orders_outbox_relay"
    [projector]="orders_projector"
    [order_processor]="orders_consumer, orders_saga, orders_outbox_writer, orders_outbox_relay"
  )
  log "making the PostgreSQL roles of namespace $ns (owner and one login role per service)"
  for role in "${PG_GROUP_ROLES[@]}"; do
    sql+="SELECT 'CREATE ROLE $role NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \\gexec
"
  done
  for role in "${!members[@]}"; do
    # Hex digits (secret_file): nothing to quote.
    password=$(cat "$(secret_file postgres "${ns}_$role")")
    sql+="SELECT 'CREATE ROLE ${ns}_$role' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ns}_$role') \\gexec
ALTER ROLE ${ns}_$role LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$password';
GRANT orders_login${members[$role]:+, ${members[$role]}} TO ${ns}_$role;
"
  done
  local db
  for db in "${DATABASES[@]}"; do
    sql+="ALTER DATABASE ${ns}_$db OWNER TO ${ns}_owner;
REVOKE CONNECT, TEMPORARY ON DATABASE ${ns}_$db FROM PUBLIC;
GRANT CONNECT ON DATABASE ${ns}_$db TO ${ns}_owner;
"
  done
  sql+="GRANT CONNECT ON DATABASE ${ns}_orders_write TO ${ns}_command_service, ${ns}_outbox_relay;
GRANT CONNECT ON DATABASE ${ns}_orders_read TO ${ns}_projector;
GRANT CONNECT ON DATABASE ${ns}_order_processor TO ${ns}_order_processor;
"
  PGOPTIONS='-c client_min_messages=warning' psql_admin -v ON_ERROR_STOP=1 <<<"$sql" >/dev/null ||
    die "making the PostgreSQL roles of namespace $ns failed"
}

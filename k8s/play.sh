#!/usr/bin/env bash
# make k8s-test: the rendered Helm chart runs. With the images of `make images` and the
# local Kafka and PostgreSQL of `make up`:
#   1. a namespace of its own on the local servers (deploy/local/infra.sh namespace):
#      fresh databases k8s_* and topics k8s.*; the Secrets the chart references, made here;
#   2. helm template with k8s/play/values.yaml (local images, the host's network, one pod
#      per service), turned into what podman plays (k8s/play/podman_manifests.py: the
#      migrate Jobs as Pods of the same spec, the Deployments and their ConfigMap as they are);
#   3. podman kube play: the migrate pods first, each must exit 0; then the five
#      Deployments, each must answer /readyz;
#   4. the demo driver (crates/demo) through the played pods: orders created, paid and
#      cancelled over the command API, read back from the query API, shipped or cancelled
#      by the saga, counted in the stats windows; it fails on anything missing;
#   5. teardown (also on failure, after printing each pod's last log lines): the pods,
#      the Secrets, the namespace.
# Objects only a cluster acts on (Services, autoscalers, network policies, the gateway)
# are not played: `make chart-test` validates and tests them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}
OUT=$STATE/k8s-play
NAMESPACE=k8s
PG=postgres://postgres@127.0.0.1:${PG_PORT:-15432}
# Ports of k8s/play/values.yaml.
COMMANDS=18080 QUERIES=18081 PROCESSOR=18083
PORTS=(command-service:18080 projector:18081 outbox-relay:18082 order-processor:18083 stats-aggregator:18084)
READY_WITHIN=${K8S_READY_WITHIN:-240}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/containers/containers.conf}

log() { printf '[k8s-play] %s\n' "$*" >&2; }
die() {
  printf '[k8s-play] ERROR: %s\n' "$*" >&2
  exit 1
}

HELM=$("$ROOT/deploy/local/tools.sh" helm)
PYBIN=$("$ROOT/deploy/local/tools.sh" python)
DEMO=$("$ROOT/deploy/local/target-dir.sh")/release/orders-demo
[ -x "$DEMO" ] || die "$DEMO is missing: \`make images\` builds it"
started=$(date +%s)

# The containers of the played pods: podman names them <pod>-<container>.
containers() { podman ps -a --format '{{.Names}}' --filter "label=app.kubernetes.io/part-of=orders-platform"; }

show_logs() {
  local name
  for name in $(containers); do
    log "--- $name ($(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$name")), last lines:"
    podman logs --tail 15 "$name" 2>&1 | sed 's/^/    /' >&2 || true
  done
}

# The Secrets an operator makes beside the chart (here: the namespace's databases). podman
# 4.3 cannot play a Secret object (containers/podman#17071); it reads a secretKeyRef from a
# podman secret holding the Secret's data as JSON (key: base64 value), so they are made so.
SECRETS=(orders-write-db:orders_write orders-read-db:orders_read order-processor-db:order_processor)
make_secrets() {
  local entry name url
  for entry in "${SECRETS[@]}"; do
    name=${entry%%:*} url=$PG/${NAMESPACE}_${entry##*:}
    podman secret rm "$name" >/dev/null 2>&1 || true
    printf '{"url":"%s"}' "$(printf '%s' "$url" | base64 -w0)" | podman secret create "$name" - >/dev/null
  done
}
remove_secrets() {
  local entry
  for entry in "${SECRETS[@]}"; do podman secret rm "${entry%%:*}" >/dev/null 2>&1 || true; done
}

teardown() {
  local rc=$?
  [ "$rc" -eq 0 ] || show_logs
  log "teardown"
  for file in services migrate; do
    [ -f "$OUT/$file.yaml" ] && podman kube down "$OUT/$file.yaml" >/dev/null 2>&1 || true
  done
  remove_secrets
  "$ROOT/deploy/local/infra.sh" namespace delete "$NAMESPACE" >/dev/null ||
    log "WARNING: the namespace $NAMESPACE (databases ${NAMESPACE}_*, topics $NAMESPACE.*) is left; the next run deletes it"
  log "done in $(($(date +%s) - started)) s (exit $rc)"
}
trap teardown EXIT

rm -rf "$OUT" && mkdir -p "$OUT"
# Pods of an earlier run that was killed before its teardown.
for pod in $(podman pod ps -q --filter "label=app.kubernetes.io/part-of=orders-platform"); do
  podman pod rm -f "$pod" >/dev/null
done
"$ROOT/deploy/local/infra.sh" namespace create "$NAMESPACE" >&2

make_secrets
"$HELM" template orders "$ROOT/k8s/orders-platform" --namespace "$NAMESPACE" \
  -f "$ROOT/k8s/play/values.yaml" >"$OUT/rendered.yaml"
"$PYBIN/python" "$ROOT/k8s/play/podman_manifests.py" "$OUT/rendered.yaml" "$OUT"

log "playing the migrate jobs"
podman kube play --quiet "$OUT/migrate.yaml" >/dev/null
while read -r pod; do
  container=$pod-migrate
  code=$(timeout 120 podman wait "$container") || die "$container did not finish within 120 s"
  [ "$code" = 0 ] || die "$container exited with $code"
  log "$pod: exited 0"
done <"$OUT/migrate-pods.txt"
podman kube down "$OUT/migrate.yaml" >/dev/null

log "playing the deployments"
# podman turns each liveness probe into a healthcheck run by a systemd timer; without
# systemd (here) it says so and runs none: the readiness waits below are this run's probes.
podman kube play --quiet "$OUT/services.yaml" >/dev/null 2>"$OUT/play.log" || {
  cat "$OUT/play.log" >&2
  die "podman kube play failed"
}
grep -v 'systemd connection .* healthchecks' "$OUT/play.log" >&2 || true
[ "$(containers | wc -l)" = "${#PORTS[@]}" ] || die "podman runs $(containers | wc -l) containers, not ${#PORTS[@]}"
deadline=$(($(date +%s) + READY_WITHIN))
for entry in "${PORTS[@]}"; do
  name=${entry%%:*} port=${entry##*:}
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/readyz")" = 200 ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      curl -s --max-time 5 "http://127.0.0.1:$port/readyz" >&2 || true
      die "$name is not ready on :$port after $READY_WITHIN s"
    fi
    sleep 1
  done
  log "$name: ready on :$port"
done
log "ready $(($(date +%s) - started)) s after the start"

# The pods run as the chart says: its user, a read-only root filesystem, no capability.
for name in $(containers); do
  info=$(podman inspect --format '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{len .EffectiveCaps}}' "$name") ||
    die "podman inspect $name failed"
  read -r user readonly caps <<<"$info"
  [ "${user%%:*}" = 65532 ] && [ "$readonly" = true ] && [ "$caps" = 0 ] ||
    die "$name runs as '$user', read-only root filesystem $readonly, $caps capabilities"
done
log "every container runs as 65532, read-only, without capabilities"

log "driving orders through the played pods (crates/demo)"
COMMANDS_URL=http://127.0.0.1:$COMMANDS QUERIES_URL=http://127.0.0.1:$QUERIES \
  PROCESSOR_URL=http://127.0.0.1:$PROCESSOR DEMO_ORDERS=${K8S_DEMO_ORDERS:-200} DEMO_USERS=20 \
  DEMO_VISIBILITY_TIMEOUT=60s "$DEMO" >&2

#!/usr/bin/env bash
# The Helm chart's checks (make chart-test, part of make test), offline:
#   1. helm lint --strict, with the default values and with values-production.yaml;
#   2. helm template of both, every object validated against the schemas of Kubernetes
#      $K8S_VERSION (kubernetes-validate --strict: unknown fields are errors; the custom
#      resources, KafkaTopic and ServiceMonitor, have no schema there and are checked in 3);
#   3. the chart's promises (k8s/tests, pytest): every service has its Deployment, Service,
#      ServiceAccount, autoscaler, disruption budget and network policy; probes on the
#      runtime's real paths; non-root, read-only, no capabilities; resources; the gateway
#      routes /commands and /queries; no credential is inlined; the topics are those of
#      deploy/topics.txt.
# helm and the Python tools are installed on first use (deploy/local/tools.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/k8s/orders-platform
OUT=${ORDERS_LOCAL_DIR:-$ROOT/.local}/chart
K8S_VERSION=${K8S_VERSION:-1.34.0}
HELM=$("$ROOT/deploy/local/tools.sh" helm)
PYBIN=$("$ROOT/deploy/local/tools.sh" python)
mkdir -p "$OUT"

for values in default production; do
  args=()
  [ "$values" = production ] && args=(-f "$CHART/values-production.yaml")
  echo "[chart] helm lint --strict ($values values)"
  "$HELM" lint --strict --quiet "$CHART" "${args[@]}"
  "$HELM" template orders "$CHART" --namespace orders "${args[@]}" >"$OUT/$values.yaml"
  echo "[chart] $(grep -c '^kind:' "$OUT/$values.yaml") objects rendered ($values values); validating against Kubernetes $K8S_VERSION"
  "$PYBIN/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$OUT/$values.yaml"
done

echo "[chart] the chart's promises (k8s/tests)"
HELM="$HELM" CHART="$CHART" RENDERED="$OUT" "$PYBIN/pytest" -q -p no:cacheprovider "$ROOT/k8s/tests"

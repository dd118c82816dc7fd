#!/usr/bin/env bash
# The dashboards' and alerts' checks (make observability-test, part of make test), offline:
#   1. promtool check rules: alerts.yml is valid, every expression parses;
#   2. promtool test rules: the alerts' unit tests (alerts.test.yml): series that must
#      fire each alert, and series that must not;
#   3. deploy/observability/tests (pytest): the dashboard and the rules use only the
#      metrics of metrics.txt, whose names follow Prometheus' conventions.
# That the services export every metric of metrics.txt is a test against the running
# services: crates/system-tests/tests/metrics.rs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/observability
PROMTOOL=$("$ROOT/deploy/local/tools.sh" promtool)
PYBIN=$("$ROOT/deploy/local/tools.sh" python)

echo "[observability] promtool check rules"
"$PROMTOOL" check rules "$HERE/alerts.yml"
echo "[observability] promtool test rules (alerts.test.yml)"
(cd "$HERE" && "$PROMTOOL" test rules alerts.test.yml)
echo "[observability] the dashboard's and the rules' metrics (deploy/observability/tests)"
"$PYBIN/pytest" -q -p no:cacheprovider "$HERE/tests"

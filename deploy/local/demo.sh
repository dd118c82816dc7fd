#!/usr/bin/env bash
# The main job of `make demo`, run after `make run`: for now it shows that the
# infrastructure and the five services are up and ready, and how to reach each.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

echo
echo "== Infrastructure"
"$ROOT/deploy/local/infra.sh" status
echo
echo "== Services"
"$ROOT/deploy/local/services.sh" status
echo
echo "== Readiness of each service (GET /readyz)"
for port in 8080 8081 8082 8083 8084; do
  curl -s --max-time 5 "http://127.0.0.1:$port/readyz"
  echo
done
echo
echo "Stop the services with \`make stop\`, everything with \`make down\`."

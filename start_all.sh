#!/usr/bin/env bash
# The seed's command: the whole system in the background (as `make start`: API, a worker per
# model, Flower, an embedded Redis when none answers), then wait until it serves.
# Stop it with `make stop`; its log is var/log/system.log.
set -euo pipefail
cd "$(dirname "$0")"
make start
url="http://${API_HOST:-127.0.0.1}:${API_PORT:-8000}"
for _ in $(seq 1 "${START_TIMEOUT:-300}"); do
  if curl -fs "$url/health/ready" >/dev/null 2>&1; then
    echo "ready: API $url (docs $url/docs, dashboard $url/dashboard), Flower http://127.0.0.1:${FLOWER_PORT:-5555}"
    exit 0
  fi
  sleep 1
done
echo "not ready after ${START_TIMEOUT:-300} s: see var/log/system.log" >&2
exit 1

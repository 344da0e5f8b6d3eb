#!/usr/bin/env bash
# The peers, each against a fresh private redis-server on a free port (never 6379):
#
#   bench/peers/run.sh            BullMQ 6.7.0 and bee-queue 2.0.0 (package.json, package-lock.json)
#   N=20000 C=50 bench/peers/run.sh
#
# Needs node and npm (Debian: apt-get install nodejs npm) and redis-server; the packages are
# installed once into bench/peers/node_modules with `npm ci` (exact versions from the lock file).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export N="${N:-50000}" C="${C:-50}"
for tool in node npm redis-server; do
  command -v "$tool" >/dev/null || { echo "peers: $tool is needed (apt-get install nodejs npm redis-server)" >&2; exit 1; }
done
if [ ! -d "$here/node_modules/bullmq" ] || [ ! -d "$here/node_modules/bee-queue" ]; then
  (cd "$here" && npm ci --no-audit --no-fund >&2)
fi
for program in bee-queue bullmq; do
  dir="$(mktemp -d)"
  port=""
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue  # something answers: taken
    port=$p; break
  done
  [ -n "$port" ] || { echo "peers: no free port" >&2; exit 1; }
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/pid" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_PORT="$port" node "$here/$program.mjs" || status=$?
  kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -rf "$dir"
  [ "${status:-0}" -eq 0 ] || exit "$status"
done

#!/usr/bin/env bash
# The demo as a cluster: Redis, the upstream alone and three replicas that
# coordinate through Redis, on the ports printed below. Ctrl-C stops them all.
#
#   examples/active-users/cluster.sh          # builds with --release first
#
# Variables: REDIS_PORT (6379), UPSTREAM_PORT (4000), REPLICA_PORTS
# ("3001 3002 3003"), HERDSMAN_ENV, DEMO_UPSTREAM_LATENCY_MS, RUST_LOG.
# Needs redis-server on PATH (apt-get install redis-server).
set -euo pipefail

cd "$(dirname "$0")/../.."
redis_port=${REDIS_PORT:-6379}
upstream_port=${UPSTREAM_PORT:-4000}
replica_ports=${REPLICA_PORTS:-"3001 3002 3003"}

command -v redis-server >/dev/null || { echo "cluster.sh: redis-server is not on PATH" >&2; exit 1; }
cargo build --release -p active-users
bin=${CARGO_TARGET_DIR:-target}/release/active-users

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping ${#pids[@]} processes"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Persistence off: Redis holds only what the replicas share, all of it
# with an expiry, and a restart loses nothing that matters.
workdir=$(mktemp -d)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$workdir" --maxmemory 64mb --maxmemory-policy volatile-ttl >/dev/null &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

HERDSMAN_ADDR=127.0.0.1:$upstream_port "$bin" --upstream-only &
pids+=($!)

for port in $replica_ports; do
    HERDSMAN_ADDR=127.0.0.1:$port \
        DEMO_UPSTREAM_URL=http://127.0.0.1:$upstream_port \
        HERDSMAN__REDIS__URL=redis://127.0.0.1:$redis_port \
        "$bin" &
    pids+=($!)
done

echo
echo "redis:    redis://127.0.0.1:$redis_port"
echo "upstream: http://127.0.0.1:$upstream_port (its calls: http://127.0.0.1:$upstream_port/upstream/calls)"
for port in $replica_ports; do echo "replica:  http://127.0.0.1:$port/"; done
echo "Ctrl-C stops everything."
wait

#!/usr/bin/env bash
# Validates deploy/nats/nats.conf + accounts.conf against a real nats-server: three nodes
# on loopback with TLS, a JetStream meta leader, and the users' permissions checked with a
# real client (nats-py, check_cluster.py next to this script). Everything lives in a
# temporary directory that is removed at the end, with the processes this script started.
#
#   deploy/nats/check-cluster.sh
#
# Environment:
#   CHECK_PORT_BASE   first of the ports used (default 24220): node i listens for clients
#                     on BASE+i, for routes on BASE+100+i, for monitoring on BASE+200+i.
#   HSYNC_BIN_DIR     if it holds the five service binaries and `hsync` (default
#                     ~/.cache/hsync/target/release), they are also run against the
#                     cluster, each as its own user, and one job goes through end to end
#                     as `client`; unset CHECK_SERVICES=0 to skip, CHECK_SERVICES=1 to
#                     require it.
#   KEEP_TMP=1        keep the temporary directory (logs) for inspection.
#
# What differs from a container: the same nats.conf and accounts.conf are used with the
# certificate directory (/etc/nats/tls/) and the JetStream store (/data/jetstream)
# rewritten to temporary ones, and nats-server's command-line flags set the ports and the
# bind address (127.0.0.1). Server names, routes and passwords come from the environment,
# as in production.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
deploy="$(cd "$here/.." && pwd)"
repo="$(cd "$deploy/.." && pwd)"
base="${CHECK_PORT_BASE:-24220}"
bin_dir="${HSYNC_BIN_DIR:-$HOME/.cache/hsync/target/release}"
check_services="${CHECK_SERVICES:-auto}"

for tool in nats-server openssl python3 curl; do
  command -v "$tool" >/dev/null || { echo "check-cluster.sh: $tool is required" >&2; exit 2; }
done

tmp="$(mktemp -d /tmp/hsync-check-cluster.XXXXXX)"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "check-cluster.sh: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }

port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server's listeners
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

client_port() { echo $((base + $1)); }
route_port() { echo $((base + 100 + $1)); }
http_port() { echo $((base + 200 + $1)); }

for i in 1 2 3; do
  for p in "$(client_port $i)" "$(route_port $i)" "$(http_port $i)"; do
    port_free "$p" || { echo "check-cluster.sh: port $p is taken; set CHECK_PORT_BASE" >&2; exit 2; }
  done
done

step "nats-server $(nats-server --version | awk '{print $2}'); temporary directory $tmp"

step "certificates (deploy/tls/gen-certs.sh)"
"$deploy/tls/gen-certs.sh" "$tmp/tls"

step "passwords (deploy/gen-secrets.sh)"
"$deploy/gen-secrets.sh" "$tmp/secrets.env"
set -a
# shellcheck disable=SC1091
. "$tmp/secrets.env"
set +a

export NATS_ROUTE_1="nats://127.0.0.1:$(route_port 1)"
export NATS_ROUTE_2="nats://127.0.0.1:$(route_port 2)"
export NATS_ROUTE_3="nats://127.0.0.1:$(route_port 3)"

step "starting three nodes"
for i in 1 2 3; do
  dir="$tmp/nats-$i"
  mkdir -p "$dir/conf" "$dir/jetstream"
  sed -e "s#/etc/nats/tls/#$tmp/tls/#g" -e "s#\"/data/jetstream\"#\"$dir/jetstream\"#" \
    "$here/nats.conf" >"$dir/conf/nats.conf"
  cp "$here/accounts.conf" "$dir/conf/accounts.conf"
  NATS_SERVER_NAME="nats-$i" nats-server -c "$dir/conf/nats.conf" -t >/dev/null
  NATS_SERVER_NAME="nats-$i" nats-server -c "$dir/conf/nats.conf" \
    -a 127.0.0.1 -p "$(client_port $i)" -m "$(http_port $i)" \
    --cluster_listen "nats://127.0.0.1:$(route_port $i)" \
    -l "$dir/server.log" &
  pids+=($!)
  echo "nats-$i: client tls://127.0.0.1:$(client_port $i), routes $(route_port $i), monitoring http://127.0.0.1:$(http_port $i)"
done

step "waiting for routes and a JetStream meta leader (/routez, /jsz)"
export CHECK_HTTP="http://127.0.0.1:$(http_port 1),http://127.0.0.1:$(http_port 2),http://127.0.0.1:$(http_port 3)"
if ! python3 "$here/check_cluster.py" wait; then
  echo "check-cluster.sh: the cluster did not form; logs:" >&2
  tail -n 20 "$tmp"/nats-*/server.log >&2 || true
  exit 1
fi

step "nats-py"
if python3 -c 'import nats' 2>/dev/null; then
  py=python3
else
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install --quiet nats-py
  py="$tmp/venv/bin/python"
fi
"$py" -c 'import importlib.metadata as m; print("nats-py", m.version("nats-py"))' 2>/dev/null || true

step "permissions and replication (check_cluster.py)"
export CHECK_CA="$tmp/tls/ca.pem"
export CHECK_URLS="tls://127.0.0.1:$(client_port 1),tls://127.0.0.1:$(client_port 2),tls://127.0.0.1:$(client_port 3)"
export CHECK_NODE3_PID="${pids[2]}"
"$py" "$here/check_cluster.py"

# The node stopped by check_cluster.py comes back: the cluster heals.
step "restarting nats-3"
wait "${pids[2]}" 2>/dev/null || true
NATS_SERVER_NAME="nats-3" nats-server -c "$tmp/nats-3/conf/nats.conf" \
  -a 127.0.0.1 -p "$(client_port 3)" -m "$(http_port 3)" \
  --cluster_listen "nats://127.0.0.1:$(route_port 3)" \
  -l "$tmp/nats-3/server.log" &
pids[2]=$!
python3 "$here/check_cluster.py" rejoined 3 || { echo "check-cluster.sh: nats-3 did not rejoin" >&2; exit 1; }

if [ "$check_services" != 0 ]; then
  missing=""
  for b in operator-runner policy-evaluator geometry-cache receipt-signer indexer hsync; do
    [ -x "$bin_dir/$b" ] || missing="$missing $b"
  done
  if [ -n "$missing" ]; then
    if [ "$check_services" = 1 ]; then
      echo "check-cluster.sh: missing in $bin_dir:$missing" >&2
      exit 1
    fi
    step "services: skipped (missing in $bin_dir:$missing)"
  else
    step "services: the five binaries and hsync against the cluster, each as its own user"
    export CHECK_TMP="$tmp" CHECK_BIN_DIR="$bin_dir" CHECK_REPO="$repo" CHECK_BASE="$base"
    "$here/check-services.sh"
  fi
fi

step "server log lines about permissions (expected: only the refusals check_cluster.py provoked)"
grep -h "Violation" "$tmp"/nats-*/server.log | sed -E 's/^\[[0-9]+\] [0-9\/]+ [0-9:.]+ //; s/cid:[0-9]+/cid:N/; s/127\.0\.0\.1:[0-9]+/127.0.0.1:P/' | sort | uniq -c || true

step "check-cluster.sh: all checks passed"

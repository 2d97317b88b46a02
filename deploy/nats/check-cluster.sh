#!/usr/bin/env bash
# Validates deploy/nats (nats.conf + accounts.conf) against a real nats-server: three
# nodes on loopback with TLS, a JetStream meta leader, the users' permissions checked with
# a real client (nats-py; check_cluster.py next to this script), replication, one node
# down and back. Then, if the binaries are built, the five services and `hsync` run
# against the same cluster, each as its own user (check-services.sh). Processes and the
# temporary directory are removed at the end.
#
#   deploy/nats/check-cluster.sh
#
# Needs nats-server, openssl, python3 (nats-py is installed into a temporary venv from
# PyPI when `import nats` fails) and curl.
#
# Environment:
#   CHECK_PORT_BASE   first of the ports used (default 24220): node i listens for clients
#                     on BASE+i, for routes on BASE+100+i, for monitoring on BASE+200+i;
#                     the services' metrics use BASE+301.. .
#   HSYNC_BIN_DIR     where the five service binaries and `hsync` are (default
#                     ~/.cache/hsync/target/release).
#   CHECK_SERVICES    auto (default: run check-services.sh when the binaries are there),
#                     1 (require them), 0 (skip).
#   KEEP_TMP=1        keep the temporary directory (configs, logs) for inspection.
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
for offset in 1 2 3 101 102 103 201 202 203 301 302 303 304 305 306; do
  port_free $((base + offset)) || { echo "check-cluster.sh: port $((base + offset)) is taken; set CHECK_PORT_BASE" >&2; exit 2; }
done

tmp="$(mktemp -d /tmp/hsync-check-cluster.XXXXXX)"
cleanup() {
  local status=$?
  # Services first (check-services.sh stops its own; this is for an interrupted run).
  for f in "$tmp"/services/*.pid "$tmp"/nats-*/pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for f in "$tmp"/services/*.pid "$tmp"/nats-*/pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
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

step "nats-server $(nats-server --version | awk '{print $2}'); temporary directory $tmp"

step "deploy/k8s/nats-config.yaml is generated from these files"
"$deploy/k8s/gen-nats-config.sh" "$tmp/nats-config.yaml"
if ! cmp -s "$tmp/nats-config.yaml" "$deploy/k8s/nats-config.yaml"; then
  echo "check-cluster.sh: deploy/k8s/nats-config.yaml is out of date: run deploy/k8s/gen-nats-config.sh" >&2
  exit 1
fi
echo "up to date"

step "certificates (deploy/tls/gen-certs.sh)"
"$deploy/tls/gen-certs.sh" "$tmp/tls"

step "passwords (deploy/gen-secrets.sh)"
"$deploy/gen-secrets.sh" "$tmp/secrets.env"
set -a
# shellcheck disable=SC1091
. "$tmp/secrets.env"
set +a

export NATS_ROUTE_1="nats://127.0.0.1:$((base + 101))"
export NATS_ROUTE_2="nats://127.0.0.1:$((base + 102))"
export NATS_ROUTE_3="nats://127.0.0.1:$((base + 103))"

# start-node.sh N: starts node N in the background (its pid in nats-N/pid); used again
# by check_cluster.py's caller and check-services.sh to bring a stopped node back.
cat >"$tmp/start-node.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
i="\$1"
dir="$tmp/nats-\$i"
NATS_SERVER_NAME="nats-\$i" nohup nats-server -c "\$dir/conf/nats.conf" \\
  -a 127.0.0.1 -p \$(($base + i)) -m \$(($base + 200 + i)) \\
  --cluster_listen "nats://127.0.0.1:\$(($base + 100 + i))" \\
  -l "\$dir/server.log" >/dev/null 2>&1 &
echo \$! >"\$dir/pid"
EOF
chmod +x "$tmp/start-node.sh"

step "starting three nodes"
for i in 1 2 3; do
  dir="$tmp/nats-$i"
  mkdir -p "$dir/conf" "$dir/jetstream"
  sed -e "s#/etc/nats/tls/#$tmp/tls/#g" -e "s#\"/data/jetstream\"#\"$dir/jetstream\"#" \
    "$here/nats.conf" >"$dir/conf/nats.conf"
  cp "$here/accounts.conf" "$dir/conf/accounts.conf"
  NATS_SERVER_NAME="nats-$i" nats-server -c "$dir/conf/nats.conf" -t
  "$tmp/start-node.sh" "$i"
  echo "nats-$i: client tls://127.0.0.1:$((base + i)), routes :$((base + 100 + i)), monitoring http://127.0.0.1:$((base + 200 + i))"
done

export CHECK_HTTP="http://127.0.0.1:$((base + 201)),http://127.0.0.1:$((base + 202)),http://127.0.0.1:$((base + 203))"
export CHECK_URLS="tls://127.0.0.1:$((base + 1)),tls://127.0.0.1:$((base + 2)),tls://127.0.0.1:$((base + 3))"
export CHECK_CA="$tmp/tls/ca.pem"

step "waiting for routes and a JetStream meta leader (/varz, /routez, /jsz)"
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
"$py" -c 'import importlib.metadata as m; print("nats-py", m.version("nats-py"))'

step "permissions and replication (check_cluster.py)"
export CHECK_NODE3_PID="$(cat "$tmp/nats-3/pid")"
"$py" "$here/check_cluster.py"

step "restarting nats-3"
"$tmp/start-node.sh" 3
# check_cluster.py deleted its streams while nats-3 was down: it must catch up (0 left).
python3 "$here/check_cluster.py" rejoined 3 0 || { echo "check-cluster.sh: nats-3 did not rejoin" >&2; exit 1; }

step "server log lines about permissions (the refusals check_cluster.py provoked, nothing else)"
grep -h "Violation" "$tmp"/nats-*/server.log \
  | sed -E 's/^\[[0-9]+\] [0-9\/]+ [0-9:.]+ //; s/^\[ERR\] 127\.0\.0\.1:[0-9]+ - cid:[0-9]+ - //' | sort | uniq -c || true
if grep -h "Violation" "$tmp"/nats-*/server.log | grep -qv '"v[0-9.]*:python3:check-cluster '; then
  echo "check-cluster.sh: a permission violation by something other than check_cluster.py" >&2
  exit 1
fi

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
    step "services: skipped (missing in $bin_dir:$missing; build with make build)"
  else
    step "services: the five binaries and hsync from $bin_dir, each as its own NATS user"
    CHECK_TMP="$tmp" CHECK_BIN_DIR="$bin_dir" CHECK_REPO="$repo" CHECK_BASE="$base" CHECK_PY="$py" \
      "$here/check-services.sh"
  fi
fi

step "check-cluster.sh: all checks passed"

#!/usr/bin/env bash
# Runs the five service binaries and `hsync` against the cluster check-cluster.sh started,
# each as its own NATS user of accounts.conf, over TLS, with HSYNC_REPLICAS=3 — the way
# compose.yaml and the Kubernetes manifests run them — and fails if the server logged a
# permission violation by any service. Called by check-cluster.sh (it exports CHECK_TMP,
# CHECK_BIN_DIR, CHECK_REPO, CHECK_BASE and the passwords); not meant to run alone.
#
# Two receipt-signers share one signing key (as the two Kubernetes replicas do); the
# leader is killed with SIGKILL half-way and the standby must take the log over.
set -euo pipefail

tmp="$CHECK_TMP"
bin="$CHECK_BIN_DIR"
repo="$CHECK_REPO"
base="$CHECK_BASE"
work="$tmp/services"
mkdir -p "$work"

pids=()
names=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

export NATS_URL="tls://127.0.0.1:$((base + 1)),tls://127.0.0.1:$((base + 2)),tls://127.0.0.1:$((base + 3))"
export SSL_CERT_FILE="$tmp/tls/ca.pem"   # async-nats trusts the CA through rustls-native-certs
unset SSL_CERT_DIR
export HSYNC_REPLICAS=3
export OTEL_SDK_DISABLED=true
export RUST_LOG="${RUST_LOG:-info}"
export HSYNC_CONNECT_TIMEOUT_S=20

metrics_port() { echo $((base + 300 + $1)); }

# start NAME USER PASSWORD METRICS_INDEX [VAR=VALUE ...] -- COMMAND
start() {
  local name="$1" user="$2" password="$3" index="$4"
  shift 4
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env NATS_USER="$user" NATS_PASSWORD="$password" \
    HSYNC_METRICS_ADDR="127.0.0.1:$(metrics_port "$index")" "${envs[@]}" \
    "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "started $name as NATS user $user (pid $!, metrics 127.0.0.1:$(metrics_port "$index"))"
}

healthy() {
  local index="$1" name="$2"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$(metrics_port "$index")/healthz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.25
  done
  echo "check-services.sh: $name did not answer /healthz; its log:" >&2
  tail -n 30 "$work/$name.log" >&2
  return 1
}

# Waits until `hsync status --json` (as admin: $SRV discovery) shows every service, and
# two receipt-signers.
wait_discovered() {
  for _ in $(seq 1 20); do
    if as admin "$bin/hsync" status --json 2>/dev/null | python3 -c '
import json, sys
data = json.load(sys.stdin)
want = {"hsync-operator-runner": 1, "hsync-policy-evaluator": 1, "hsync-geometry-cache": 1,
        "hsync-receipt-signer": 2, "hsync-indexer": 1}
sys.exit(0 if all(len(data.get(k, {}).get("ping", [])) >= n for k, n in want.items()) else 1)'; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

as() {
  local user="$1"
  shift
  local var
  case "$user" in
    client) var=HSYNC_CLIENT_PASSWORD ;;
    admin) var=HSYNC_ADMIN_PASSWORD ;;
  esac
  NATS_USER="$user" NATS_PASSWORD="${!var}" "$@"
}

fail() { echo "FAIL  $*" >&2; exit 1; }
pass() { echo "PASS  $*"; }

start operator-runner operator-runner "$HSYNC_RUNNER_PASSWORD" 1 -- "$bin/operator-runner"
start policy-evaluator policy-evaluator "$HSYNC_POLICY_EVALUATOR_PASSWORD" 2 -- "$bin/policy-evaluator"
start geometry-cache geometry-cache "$HSYNC_GEOMETRY_CACHE_PASSWORD" 3 -- "$bin/geometry-cache"
start receipt-signer-a receipt-signer "$HSYNC_RECEIPT_SIGNER_PASSWORD" 4 \
  HSYNC_SIGNER_DIR="$work/signer-a" HSYNC_SIGNER_ID=signer-a -- "$bin/receipt-signer"
start indexer indexer "$HSYNC_INDEXER_PASSWORD" 5 HSYNC_INDEX_DIR="$work/index" -- "$bin/indexer"
healthy 1 operator-runner
healthy 2 policy-evaluator
healthy 3 geometry-cache
healthy 4 receipt-signer-a
healthy 5 indexer

# The standby gets the same key (what the Kubernetes init container does from the Secret).
for _ in $(seq 1 80); do [ -s "$work/signer-a/signer.key" ] && break; sleep 0.25; done
[ -s "$work/signer-a/signer.key" ] || fail "receipt-signer-a wrote no signing key"
install -d -m 0700 "$work/signer-b"
install -m 0600 "$work/signer-a/signer.key" "$work/signer-b/signer.key"
start receipt-signer-b receipt-signer "$HSYNC_RECEIPT_SIGNER_PASSWORD" 6 \
  HSYNC_SIGNER_DIR="$work/signer-b" HSYNC_SIGNER_ID=signer-b -- "$bin/receipt-signer"
healthy 6 receipt-signer-b

wait_discovered || fail "not every service answered \$SRV.PING"
pass "the five services (two receipt-signers) are up, each as its own user; \$SRV discovery as admin"
as admin "$bin/hsync" status | sed 's/^/      /'

# Streams and buckets the services created: three replicas each.
curl -fsS "http://127.0.0.1:$((base + 201))/jsz?streams=true&accounts=true" | python3 -c '
import json, sys
j = json.load(sys.stdin)
names = sorted(s["name"] for a in j.get("account_details", []) for s in a.get("stream_detail", []))
print("      streams on nats-1:", " ".join(names))'

# --- a job as client, with receipts (runner -> policy -> geometry -> signer -> indexer) -----
as client "$bin/hsync" run --wait-receipts "$repo/examples/jobs/02-hyperbolic.json" >"$work/run1.json" \
  || fail "client: hsync run --wait-receipts (see $work/run1.json)"
python3 - "$work/run1.json" "$work/receipt1.json" <<'PY' || fail "client: job 02-hyperbolic"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "succeeded", r
assert r["receipts"], "no receipts"
json.dump(r["receipts"][0], open(sys.argv[2], "w"))
print(f"PASS  client: hsync run --wait-receipts examples/jobs/02-hyperbolic.json: {r['status']}, "
      f"{len(r['nodes'])} nodes, {len(r['receipts'])} receipts")
PY
as client "$bin/hsync" receipt verify "$work/receipt1.json" --key "$work/signer-a/signer.vkey" >/dev/null \
  || fail "client: receipt verification"
pass "client: receipt verified offline with signer-a's verifier key"

# --- the durable path -------------------------------------------------------------------------
as client "$bin/hsync" submit --wait "$repo/examples/jobs/01-vector-math.json" >"$work/submit.json" \
  || fail "client: hsync submit --wait"
job_id="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["status"]=="succeeded", r; print(r["job_id"])' "$work/submit.json")" \
  || fail "client: durable job"
pass "client: hsync submit --wait examples/jobs/01-vector-math.json: succeeded ($job_id)"
as client "$bin/hsync" result "$job_id" >/dev/null || fail "client: hsync result"
pass "client: hsync result $job_id (read from the hsync_results bucket)"

# --- outputs larger than one message: through the object store ---------------------------------
python3 - "$work/large.json" <<'PY'
import json, sys
n = 600
job = {"submitter": "alice", "nodes": [
    {"id": "m", "op": "mat.matmul",
     "args": {"a": {"lit": [[float(i)] for i in range(n)]}, "b": {"lit": [[float(j) for j in range(n)]]}}}]}
json.dump(job, open(sys.argv[1], "w"))
PY
as client "$bin/hsync" run "$work/large.json" >"$work/large-result.json" || fail "client: large outputs job"
python3 - "$work/large-result.json" <<'PY' || fail "client: large outputs"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["outputs"]["m"]
assert r["status"] == "succeeded" and len(m) == 600 and len(m[0]) == 600 and m[599][599] == 599.0 * 599.0, r.get("error")
print(f"PASS  client: a 600x600 matrix result (about 3 MB, over the 1 MiB max_payload) came through the object store")
PY

# --- registry, audit, keys -------------------------------------------------------------------
as client "$bin/hsync" operators list >"$work/operators.txt" || fail "client: hsync operators list"
grep -q "geo.poincare.distance" "$work/operators.txt" || fail "client: the registry lacks the geometry operators"
pass "client: hsync operators list ($(wc -l <"$work/operators.txt") lines, geo.* registered by geometry-cache)"
as client "$bin/hsync" audit stats >/dev/null || fail "client: hsync audit stats"
as client "$bin/hsync" receipt key >/dev/null || fail "client: hsync receipt key"
pass "client: hsync audit stats, hsync receipt key"

# --- policies: admin may write, client may not -------------------------------------------------
if as client "$bin/hsync" policy put check-client "$repo/examples/policies/baseline-permit.cedar" >"$work/client-policy.txt" 2>&1; then
  fail "client: hsync policy put succeeded; it must be refused"
fi
pass "client: hsync policy put refused ($(tail -n 1 "$work/client-policy.txt" | cut -c1-100))"
as admin "$bin/hsync" policy put baseline "$repo/examples/policies/baseline-permit.cedar" >/dev/null \
  || fail "admin: hsync policy put"
pass "admin: hsync policy put baseline (stored, applied by the policy-evaluator)"

# --- the signer leader dies: the standby takes the log over ---------------------------------
leader_index=""
for i in "${!names[@]}"; do
  if [ "${names[$i]}" = receipt-signer-a ]; then leader_index="$i"; fi
done
grep -q "leading the receipt log as signer-a" "$work/receipt-signer-a.log" \
  || fail "receipt-signer-a is not the leader (see $work/receipt-signer-a.log)"
kill -9 "${pids[$leader_index]}"
wait "${pids[$leader_index]}" 2>/dev/null || true
echo "....  killed receipt-signer-a (the leader) with SIGKILL"
as client "$bin/hsync" run --wait-receipts "$repo/examples/jobs/01-vector-math.json" >"$work/run2.json" \
  || fail "client: job after the leader died"
python3 - "$work/run2.json" "$work/receipt2.json" <<'PY' || fail "client: receipts after failover"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "succeeded" and r["receipts"], r
json.dump(r["receipts"][-1], open(sys.argv[2], "w"))
print(f"PASS  client: a job after the leader's death got {len(r['receipts'])} receipts")
PY
grep -q "took the receipt log over from signer-a" "$work/receipt-signer-b.log" \
  || fail "receipt-signer-b did not take over (see $work/receipt-signer-b.log)"
pass "receipt-signer-b took the receipt log over from signer-a"
as client "$bin/hsync" receipt verify "$work/receipt2.json" --key "$work/signer-a/signer.vkey" >/dev/null \
  || fail "client: verifying a receipt signed by signer-b with signer-a's key"
pass "client: a receipt signed by signer-b verifies with the same verifier key"

# --- no service was refused anything ---------------------------------------------------------
violations="$(grep -h "Violation" "$tmp"/nats-*/server.log | grep -E 'User "(operator-runner|policy-evaluator|geometry-cache|receipt-signer|indexer|admin)"' | grep -v 'check-cluster' || true)"
if [ -n "$violations" ]; then
  echo "$violations" >&2
  fail "the server refused a service something (above)"
fi
client_violations="$(grep -h "Violation" "$tmp"/nats-*/server.log | grep 'User "client"' | grep -v 'check-cluster' | sed -E 's/.* - (Publish|Subscription) Violation/\1 Violation/' | sort | uniq -c || true)"
pass "no permission violation by any service user while they ran"
echo "      refusals of the client's hsync (expected: the policy put):"
echo "${client_violations:-      none}" | sed 's/^/      /'
for name in "${names[@]}"; do
  n="$(grep -ci "permission" "$work/$name.log" || true)"
  [ "$n" = 0 ] || { grep -i "permission" "$work/$name.log" | head -5 >&2; fail "$name logged permission errors"; }
done
pass "no service logged a permission error"

#!/usr/bin/env bash
# Runs the five service binaries and `hsync` against the cluster check-cluster.sh started,
# each as its own NATS user of accounts.conf, over TLS, with HSYNC_REPLICAS=3 — as
# compose.yaml and the Kubernetes manifests run them — and fails if the server logged a
# permission violation by any of them. Called by check-cluster.sh, which exports
# CHECK_TMP, CHECK_BIN_DIR, CHECK_REPO, CHECK_BASE, CHECK_HTTP, CHECK_PY (a python with
# nats-py) and the passwords.
#
# Also: two receipt-signers share one signing key (as the two Kubernetes replicas do), a
# NATS node is restarted while the services run, and the signer leader is killed with
# SIGKILL; jobs keep getting verifiable receipts throughout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
tmp="$CHECK_TMP"
bin="$CHECK_BIN_DIR"
repo="$CHECK_REPO"
base="$CHECK_BASE"
work="$tmp/services"
mkdir -p "$work"

stop_all() {
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for f in "$work"/*.pid; do
    [ -f "$f" ] || continue
    for _ in $(seq 1 40); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$(cat "$f")" 2>/dev/null || true
  done
}
trap stop_all EXIT

export NATS_URL="tls://127.0.0.1:$((base + 1)),tls://127.0.0.1:$((base + 2)),tls://127.0.0.1:$((base + 3))"
export SSL_CERT_FILE="$tmp/tls/ca.pem"   # async-nats trusts the CA through rustls-native-certs
unset SSL_CERT_DIR
export HSYNC_REPLICAS=3
export OTEL_SDK_DISABLED=true
export RUST_LOG="${RUST_LOG:-info}"
export RUST_BACKTRACE=0
export HSYNC_CONNECT_TIMEOUT_S=20

fail() { echo "FAIL  $*" >&2; exit 1; }
pass() { echo "PASS  $*"; }

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
  echo $! >"$work/$name.pid"
  disown $!   # killed on purpose later; no job-control notice
  echo "started $name as NATS user $user (pid $!, metrics http://127.0.0.1:$(metrics_port "$index"))"
}

# wait_log NAME TEXT: until the service's log says TEXT (or it died).
wait_log() {
  local name="$1" text="$2"
  for _ in $(seq 1 120); do
    grep -q "$text" "$work/$name.log" && return 0
    kill -0 "$(cat "$work/$name.pid")" 2>/dev/null || break
    sleep 0.25
  done
  tail -n 20 "$work/$name.log" >&2
  fail "$name: no \"$text\" in its log"
}

as() {
  local user="$1" var
  shift
  case "$user" in
    client) var=HSYNC_CLIENT_PASSWORD ;;
    admin) var=HSYNC_ADMIN_PASSWORD ;;
  esac
  NATS_USER="$user" NATS_PASSWORD="${!var}" "$@"
}

# run_job NAME JOB: hsync run --wait-receipts as client; checks status and receipts and
# keeps the last receipt in NAME.receipt.json.
run_job() {
  local name="$1" job="$2"
  as client "$bin/hsync" run --wait-receipts "$job" >"$work/$name.json" || fail "client: hsync run $job"
  python3 - "$work/$name.json" "$work/$name.receipt.json" "$(basename "$job")" <<'PY' || fail "client: $job"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "succeeded", r.get("error")
assert r.get("receipts"), f"no receipts: {r.get('error')}"
json.dump(r["receipts"][-1], open(sys.argv[2], "w"))
print(f"PASS  client: hsync run --wait-receipts {sys.argv[3]}: {r['status']}, {len(r['nodes'])} nodes, "
      f"{len(r['receipts'])} receipts")
PY
}

# The runner first: it creates most streams and buckets. Services that create the same
# three-replica bucket at the same instant can fail their first write ("no stream found
# for given subject") and exit; compose and Kubernetes restart them (docs/DEPLOY.md).
start operator-runner operator-runner "$HSYNC_RUNNER_PASSWORD" 1 -- "$bin/operator-runner"
wait_log operator-runner "operator-runner ready"
start policy-evaluator policy-evaluator "$HSYNC_POLICY_EVALUATOR_PASSWORD" 2 -- "$bin/policy-evaluator"
start geometry-cache geometry-cache "$HSYNC_GEOMETRY_CACHE_PASSWORD" 3 -- "$bin/geometry-cache"
start indexer indexer "$HSYNC_INDEXER_PASSWORD" 5 HSYNC_INDEX_DIR="$work/index" -- "$bin/indexer"
start receipt-signer-a receipt-signer "$HSYNC_RECEIPT_SIGNER_PASSWORD" 4 \
  HSYNC_SIGNER_DIR="$work/signer-a" HSYNC_SIGNER_ID=signer-a -- "$bin/receipt-signer"
wait_log policy-evaluator "policy-evaluator ready"
wait_log geometry-cache "geometry-cache ready"
wait_log indexer "indexer ready"
wait_log receipt-signer-a "leading the receipt log as signer-a"

# The standby gets the same key (what the Kubernetes init container does from the
# Secret), and starts once the first one leads, as a StatefulSet starts its pods in order.
install -d -m 0700 "$work/signer-b"
install -m 0600 "$work/signer-a/signer.key" "$work/signer-b/signer.key"
start receipt-signer-b receipt-signer "$HSYNC_RECEIPT_SIGNER_PASSWORD" 6 \
  HSYNC_SIGNER_DIR="$work/signer-b" HSYNC_SIGNER_ID=signer-b -- "$bin/receipt-signer"
wait_log receipt-signer-b "standing by"

for i in 1 2 3 4 5 6; do
  curl -fsS "http://127.0.0.1:$(metrics_port $i)/healthz" >/dev/null || fail "metrics port $(metrics_port $i): no /healthz"
done
pass "every service answers GET /healthz on its metrics port"
as client "$bin/hsync" status >"$work/status.txt" || fail "client: hsync status"
grep -E '^hsync-' "$work/status.txt" | sed 's/^/      /'
[ "$(grep -c ' up ' "$work/status.txt")" = 5 ] || fail "client: hsync status does not show five services up"
pass "client: hsync status (\$SRV discovery) shows the five services, two receipt-signers"
echo "      streams (from nats-1's /jsz):"
curl -fsS "http://127.0.0.1:$((base + 201))/jsz?accounts=true&streams=true&config=true" | python3 -c '
import json, sys
j = json.load(sys.stdin)
for a in j.get("account_details", []):
    for s in sorted(a.get("stream_detail", []), key=lambda s: s["name"]):
        c = s.get("cluster") or {}
        peers = {"nats-1", c.get("leader")} | {r["name"] for r in c.get("replicas") or []}
        print("      %-22s replicas=%s on %s, leader %s" % (s["name"], (s.get("config") or {}).get("num_replicas"), ",".join(sorted(p for p in peers if p)), c.get("leader")))'

# --- jobs as client --------------------------------------------------------------------
run_job run1 "$repo/examples/jobs/02-hyperbolic.json"
as client "$bin/hsync" receipt verify "$work/run1.receipt.json" --key "$work/signer-a/signer.vkey" >/dev/null \
  || fail "client: receipt verification"
pass "client: its receipt verifies offline with the signer's verifier key"

as client "$bin/hsync" submit --wait "$repo/examples/jobs/01-vector-math.json" >"$work/submit.json" \
  || fail "client: hsync submit --wait"
job_id="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["status"]=="succeeded", r; print(r["job_id"])' "$work/submit.json")" \
  || fail "client: durable job"
pass "client: hsync submit --wait 01-vector-math.json (durable path): succeeded"
as client "$bin/hsync" result "$job_id" >/dev/null || fail "client: hsync result"
pass "client: hsync result <job_id> (the hsync_results bucket)"

python3 - "$work/large.json" <<'PY'
import json, sys
n = 600
job = {"submitter": "alice", "nodes": [
    {"id": "m", "op": "mat.matmul",
     "args": {"a": {"lit": [[float(i)] for i in range(n)]}, "b": {"lit": [[float(j) for j in range(n)]]}}}]}
json.dump(job, open(sys.argv[1], "w"))
PY
# Reading an object takes a JetStream consumer, which `client` may not create (its
# delivery subject could be any stream's): a large result is for `admin` (docs/DEPLOY.md).
if as client "$bin/hsync" run "$work/large.json" >"$work/large-client.json" 2>&1; then
  fail "client: a result through the object store was expected to be refused"
fi
pass "client: a result larger than one message is refused (no JetStream consumers for client; known gap)"
as admin "$bin/hsync" run "$work/large.json" >"$work/large-result.json" || fail "admin: large outputs job"
python3 - "$work/large-result.json" <<'PY' || fail "admin: large outputs"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["outputs"]["m"]
assert r["status"] == "succeeded" and len(m) == 600 and len(m[0]) == 600 and m[599][599] == 599.0 * 599.0, r.get("error")
print("PASS  admin: a 600x600 matrix (about 3 MB, over the 1 MiB max_payload) came through the object store")
PY

as admin "$bin/hsync" operators list >"$work/operators.txt" || fail "admin: hsync operators list"
grep -q "geo.poincare.distance" "$work/operators.txt" || fail "admin: the registry lacks the geometry operators"
pass "admin: hsync operators list (geo.* registered by the geometry-cache)"
as client "$bin/hsync" operators show geo.poincare.distance >/dev/null || fail "client: hsync operators show"
as client "$bin/hsync" audit operators >/dev/null || fail "client: hsync audit operators"
as client "$bin/hsync" audit stats >/dev/null || fail "client: hsync audit stats"
as client "$bin/hsync" receipt key >/dev/null || fail "client: hsync receipt key"
pass "client: hsync operators show, audit operators, audit stats, receipt key"

# --- policies: admin may write them, client may not ------------------------------------
if as client "$bin/hsync" policy put check-client "$repo/examples/policies/baseline-permit.cedar" >"$work/client-policy.txt" 2>&1; then
  fail "client: hsync policy put succeeded; it must be refused"
fi
pass "client: hsync policy put refused ($(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print(e["code"] + ": " + e["message"][:90])' "$work/client-policy.txt" 2>/dev/null || tail -n 1 "$work/client-policy.txt"))"
as admin "$bin/hsync" policy put baseline "$repo/examples/policies/baseline-permit.cedar" >/dev/null 2>&1 \
  || fail "admin: hsync policy put"
pass "admin: hsync policy put baseline (stored; the policy-evaluator applied it)"

# --- a client cannot make a service answer into a stream ---------------------------------
# (In one shared account this stopped the receipt log: the signer wrote its answer into
# HSYNC_RECEIPTS and then refused the unreadable "last batch".)
"$CHECK_PY" - <<'PY' || fail "client: sending requests with chosen reply subjects"
import asyncio, logging, os, ssl, nats
logging.getLogger("asyncio").setLevel(logging.ERROR)
async def main():
    nc = await nats.connect(servers=os.environ["NATS_URL"].split(","), user="client",
                            password=os.environ["HSYNC_CLIENT_PASSWORD"],
                            tls=ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]))
    for subject in ["hsync.receipts.keys", "$SRV.PING", "$SRV.PING.hsync-receipt-signer"]:
        await nc.publish(subject, b"{}", reply="hsync.receipts.batches")
    await nc.publish("hsync.jobs.run", b"{}", reply="hsync.ops.records")
    await nc.publish("hsync.jobs.run", b"{}", reply="$KV.hsync_results.victim")
    await nc.flush()
    await asyncio.sleep(1)
    results = await nc.jetstream().key_value("hsync_results")
    try:
        await results.get("victim")
        raise SystemExit("a reply was stored in hsync_results under victim")
    except nats.js.errors.KeyNotFoundError:
        pass
    await nc.close()
asyncio.run(main())
PY
run_job deputy "$repo/examples/jobs/01-vector-math.json"
if grep -q "unreadable\|another signer published" "$work"/receipt-signer-*.log; then
  fail "a reply landed in HSYNC_RECEIPTS (see the receipt-signer logs)"
fi
pass "client: requests with reply subjects hsync.receipts.batches, hsync.ops.records, \$KV.hsync_results.* changed nothing; receipts still flow"

# --- a NATS node restarts under the services --------------------------------------------
kill "$(cat "$tmp/nats-2/pid")"
for _ in $(seq 1 40); do kill -0 "$(cat "$tmp/nats-2/pid")" 2>/dev/null || break; sleep 0.25; done
echo "....  stopped nats-2"
run_job during "$repo/examples/jobs/01-vector-math.json"
"$tmp/start-node.sh" 2
python3 "$here/check_cluster.py" rejoined 2 >/dev/null || fail "nats-2 did not rejoin"
echo "....  nats-2 is back"
sleep 2
run_job after "$repo/examples/jobs/02-hyperbolic.json"
pass "jobs ran while nats-2 was down and after it came back"

# --- the signer leader dies: the standby takes the log over ------------------------------
kill -9 "$(cat "$work/receipt-signer-a.pid")"
echo "....  killed receipt-signer-a (the leader) with SIGKILL"
run_job failover "$repo/examples/jobs/01-vector-math.json"
grep -q "took the receipt log over from signer-a" "$work/receipt-signer-b.log" \
  || fail "receipt-signer-b did not take over (see $work/receipt-signer-b.log)"
pass "receipt-signer-b took the receipt log over from signer-a"
as client "$bin/hsync" receipt verify "$work/failover.receipt.json" --key "$work/signer-a/signer.vkey" >/dev/null \
  || fail "client: a receipt signed by signer-b does not verify with signer-a's key"
pass "client: a receipt signed by signer-b verifies with the same verifier key"

# --- nothing a service did was refused ------------------------------------------------
refused="$(grep -h "Violation" "$tmp"/nats-*/server.log | grep -v ':python3:check-cluster ' \
  | sed -E 's/^\[[0-9]+\] [0-9\/]+ [0-9:.]+ //; s/^\[ERR\] 127\.0\.0\.1:[0-9]+ - cid:[0-9]+ - //' | sort | uniq -c || true)"
echo "      permission refusals while the services ran (expected: the client's policy put and large result):"
echo "${refused:-none}" | sed 's/^/      /'
if grep -h "Violation" "$tmp"/nats-*/server.log | grep -v ':python3:check-cluster ' | grep -qv 'User "client"'; then
  fail "the server refused a service or admin something (above)"
fi
pass "no permission violation by any service user or admin"
for log in "$work"/*.log; do
  if grep -qi "permissions violation" "$log"; then
    grep -i "permissions violation" "$log" | head -3 >&2
    fail "$(basename "$log" .log) logged a permission error"
  fi
done
pass "no service logged a permission error"

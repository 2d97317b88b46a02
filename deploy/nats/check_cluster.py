"""Permission and replication checks for deploy/nats (run by check-cluster.sh).

Connects to the three-node cluster over TLS as each user of accounts.conf and checks
that the client (account CLIENTS) cannot forge what the services produce (records,
signed batches, policy and registry entries, acks, consumers) nor choose the reply
subject a service answers on, that each service (account HSYNC) can do what it does in
production, that streams replicate to three nodes, and that they keep accepting writes
with one node down.

JetStream API calls are sent on the subjects async-nats 0.51 uses (what the services
and `hsync` send), not through nats-py's helpers where those differ.

Environment (set by check-cluster.sh): CHECK_URLS, CHECK_HTTP, CHECK_CA,
CHECK_NODE3_PID, HSYNC_<USER>_PASSWORD.

    check_cluster.py wait             # until routes and a JetStream meta leader (no nats-py)
    check_cluster.py rejoined N [S]   # until node N is back, holding S streams (no nats-py)
    check_cluster.py                  # the checks (nats-py)
"""

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request

HTTP = os.environ["CHECK_HTTP"].split(",")

PASSWORD_VARS = {
    "client": "HSYNC_CLIENT_PASSWORD",
    "admin": "HSYNC_ADMIN_PASSWORD",
    "operator-runner": "HSYNC_RUNNER_PASSWORD",
    "policy-evaluator": "HSYNC_POLICY_EVALUATOR_PASSWORD",
    "geometry-cache": "HSYNC_GEOMETRY_CACHE_PASSWORD",
    "receipt-signer": "HSYNC_RECEIPT_SIGNER_PASSWORD",
    "indexer": "HSYNC_INDEXER_PASSWORD",
}

failures = []


def check(ok, what):
    print(("PASS  " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


class User:
    """One connection as one user, remembering the permission errors it received."""

    def __init__(self, name):
        self.name = name
        self.errors = []
        self.nc = None

    async def connect(self, servers=None, password=None, retry=True):
        ctx = ssl.create_default_context(cafile=CA)

        async def error_cb(e):
            self.errors.append(str(e))

        self.nc = await nats.connect(
            servers=servers or URLS,
            user=self.name,
            password=password if password is not None else os.environ[PASSWORD_VARS[self.name]],
            tls=ctx,
            error_cb=error_cb,
            name=f"check-cluster {self.name}",
            connect_timeout=5,
            dont_randomize=True,
            allow_reconnect=retry,
            max_reconnect_attempts=-1 if retry else 0,
            reconnect_time_wait=0.2,
        )
        self.js = self.nc.jetstream(timeout=5)
        return self

    def violations(self, subject):
        return [e for e in self.errors if "permissions violation" in e and f'"{subject.lower()}"' in e]

    async def settle(self):
        await self.nc.flush(timeout=5)
        await asyncio.sleep(0.2)

    async def publish_refused(self, subject, payload=b"x"):
        self.errors.clear()
        await self.nc.publish(subject, payload)
        await self.settle()
        check(bool(self.violations(subject)), f"{self.name}: publish to {subject} refused")

    async def publish_allowed(self, subject, payload=b"x"):
        self.errors.clear()
        await self.nc.publish(subject, payload)
        await self.settle()
        check(not self.violations(subject), f"{self.name}: publish to {subject} allowed")

    async def subscribe_refused(self, subject):
        self.errors.clear()
        sub = await self.nc.subscribe(subject)
        await self.settle()
        check(bool(self.violations(subject)), f"{self.name}: subscribe to {subject} refused")
        await sub.unsubscribe()

    async def request_reaches_nobody(self, subject):
        """Allowed, with no service running: the server answers 'no responders', or,
        across an account import, the request times out; no permission error either way."""
        self.errors.clear()
        try:
            await self.nc.request(subject, b"{}", timeout=2)
            outcome = "a reply"
        except NoRespondersError:
            outcome = "no responders"
        except NatsTimeout:
            outcome = "a timeout"
        ok = outcome in ("no responders", "a timeout") and not self.violations(subject)
        check(ok, f"{self.name}: request to {subject} allowed (no service runs: {outcome}; no permission error)")

    async def api(self, subject, body=None):
        """A JetStream API request; returns the decoded JSON reply."""
        payload = b"" if body is None else json.dumps(body).encode()
        msg = await self.nc.request(subject, payload, timeout=5)
        return json.loads(msg.data) if msg.data else {}

    async def js_publish(self, subject, payload, headers=None):
        ack = await self.js.publish(subject, payload, headers=headers, timeout=5)
        return ack

    async def js_publish_retrying(self, subject, payload, headers=None, seconds=20):
        """While a stream elects a new leader it answers nothing; try again."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            try:
                return await self.js_publish(subject, payload, headers)
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def close(self):
        if self.nc and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except (Exception, asyncio.CancelledError):
                pass  # a connection moved off the stopped node may not close cleanly


def kv_stream(bucket, history=1, max_age=0):
    """The stream crates/bus/src/streams.rs creates for a KV bucket, with 3 replicas."""
    return StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        max_msgs_per_subject=history,
        max_age=max_age,
        storage=StorageType.FILE,
        allow_rollup_hdrs=True,
        deny_delete=True,
        deny_purge=False,
        allow_direct=True,
        num_replicas=3,
        discard=DiscardPolicy.NEW,
    )


def work_queue(name, subject):
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=600,
        num_replicas=3,
        storage=StorageType.FILE,
    )


def http_json(base, path):
    with urllib.request.urlopen(base + path, timeout=5) as r:
        return json.load(r)


def tls_required(url):
    """The INFO a plain-text client gets first: the server demands TLS."""
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        line = s.recv(4096).decode()
    info = json.loads(line.split(" ", 1)[1])
    return info.get("tls_required") is True


async def main():
    # --- connections -------------------------------------------------------------------
    check(all(tls_required(u) for u in URLS), "every node requires TLS on the client port")
    users = {}
    for i, name in enumerate(PASSWORD_VARS):
        # Spread the users over the three nodes.
        servers = URLS[i % 3 :] + URLS[: i % 3]
        users[name] = await User(name).connect(servers=servers)
        check(True, f"{name}: connected over TLS to {users[name].nc.connected_url.netloc}")
    client, admin = users["client"], users["admin"]
    runner, evaluator = users["operator-runner"], users["policy-evaluator"]
    geometry, signer, indexer = users["geometry-cache"], users["receipt-signer"], users["indexer"]

    try:
        await User("client").connect(password="wrong-password", retry=False)
        check(False, "client: a wrong password is refused")
    except Exception as e:  # nats-py raises after its connect attempts fail
        check(True, f"client: a wrong password is refused ({str(e) or type(e).__name__})")

    # --- streams and buckets, created by their owners with 3 replicas (HSYNC_REPLICAS=3) --
    created = [
        (runner, work_queue("HSYNC_RECORDS", "hsync.ops.records")),
        (runner, work_queue("HSYNC_JOBS", "hsync.jobs.submit")),
        (runner, kv_stream("hsync_operators", history=5)),
        (runner, kv_stream("hsync_results", max_age=24 * 3600)),
        (signer, StreamConfig(name="HSYNC_RECEIPTS", subjects=["hsync.receipts.batches"],
                              retention=RetentionPolicy.LIMITS, duplicate_window=600,
                              num_replicas=3, storage=StorageType.FILE)),
        (signer, kv_stream("hsync_signer_lease")),
        (evaluator, kv_stream("hsync_policies", history=5)),
    ]
    for user, config in created:
        info = await user.js.add_stream(config)
        replicas = 1 + len(info.cluster.replicas or []) if info.cluster else 1
        check(info.config.num_replicas == 3 and replicas == 3,
              f"{user.name}: created stream {config.name} with 3 replicas "
              f"(leader {info.cluster.leader if info.cluster else '?'}, {replicas} peers)")
    # The object store for large outputs, as async-nats creates it (runner).
    obj = await runner.api("$JS.API.STREAM.CREATE.OBJ_hsync_outputs", {
        "name": "OBJ_hsync_outputs", "subjects": ["$O.hsync_outputs.C.>", "$O.hsync_outputs.M.>"],
        "retention": "limits", "storage": "file", "num_replicas": 3, "discard": "new",
        "allow_rollup_hdrs": True, "allow_direct": True, "max_age": 24 * 3600 * 10**9,
        "max_consumers": -1, "max_msgs": -1, "max_bytes": -1, "max_msg_size": -1,
        "max_msgs_per_subject": -1, "duplicate_window": 120 * 10**9,
    })
    check("error" not in obj and obj.get("config", {}).get("num_replicas") == 3,
          "operator-runner: created object store OBJ_hsync_outputs with 3 replicas")

    # --- client: what it may do ----------------------------------------------------------
    await client.request_reaches_nobody("hsync.jobs.run")
    await client.request_reaches_nobody("hsync.jobs.extend")
    await client.request_reaches_nobody("hsync.index.receipt.by_operation")
    await client.request_reaches_nobody("hsync.receipts.keys")
    await client.publish_allowed("$SRV.PING")
    ack = await client.js_publish("hsync.jobs.submit", b'{"job_id":"check-1"}', headers={"Nats-Msg-Id": "check-1"})
    check(ack.stream == "HSYNC_JOBS", f"client: durable submit stored in {ack.stream} (seq {ack.seq})")
    sub = await client.nc.subscribe("hsync.jobs.result.*")
    await client.settle()
    check(not client.violations("hsync.jobs.result.*"), "client: subscribe to hsync.jobs.result.* allowed")

    # --- client: what it must not do -----------------------------------------------------
    await client.publish_refused("hsync.ops.records")
    await client.publish_refused("hsync.receipts.batches")
    await client.publish_refused("$KV.hsync_policies.x")
    await client.publish_refused("$KV.hsync_policies.policy.allow-all")
    await client.publish_refused("$KV.hsync_operators.x")
    await client.publish_refused("$KV.hsync_signer_lease.leader")
    await client.publish_refused("$KV.hsync_results.check-1")
    await client.publish_refused("$O.hsync_outputs.C.x")
    await client.publish_refused("$JS.ACK.HSYNC_RECORDS.receipt-signer.1.1.1.1.0")
    await client.publish_refused("$JS.API.CONSUMER.CREATE.HSYNC_RECORDS.thief")
    await client.publish_refused("$JS.API.CONSUMER.CREATE.HSYNC_JOBS")
    await client.publish_refused("$JS.API.CONSUMER.CREATE.OBJ_hsync_outputs")
    await client.publish_refused("$JS.API.CONSUMER.CREATE.KV_hsync_operators")
    await client.publish_refused("$JS.API.CONSUMER.MSG.NEXT.HSYNC_RECORDS.receipt-signer")
    await client.publish_refused("$JS.API.STREAM.DELETE.HSYNC_RECEIPTS")
    await client.publish_refused("$JS.API.STREAM.PURGE.HSYNC_RECORDS")
    await client.publish_refused("$JS.API.STREAM.MSG.DELETE.HSYNC_RECEIPTS")
    await client.publish_refused("$JS.API.STREAM.CREATE.KV_hsync_policies")
    await client.publish_refused("hsync.policy.evaluate")
    await client.subscribe_refused("hsync.jobs.run")
    await client.subscribe_refused("hsync.ops.records")
    await client.subscribe_refused("hsync.policy.evaluate")

    # --- the durable path, each step as its owner ----------------------------------------
    # runner: its durable consumer of the jobs work queue, created and pulled the way
    # async-nats does it, then the job acked.
    consumer = await runner.api("$JS.API.CONSUMER.CREATE.HSYNC_JOBS.operator-runner", {
        "stream_name": "HSYNC_JOBS", "action": "create",
        "config": {"durable_name": "operator-runner", "ack_policy": "explicit",
                   "ack_wait": 30 * 10**9, "max_ack_pending": 10000, "deliver_policy": "all"},
    })
    check("error" not in consumer, f"operator-runner: created durable consumer HSYNC_JOBS/operator-runner {consumer.get('error', '')}")
    inbox = runner.nc.new_inbox()
    pulled = await runner.nc.subscribe(inbox)
    await runner.nc.publish("$JS.API.CONSUMER.MSG.NEXT.HSYNC_JOBS.operator-runner",
                            json.dumps({"batch": 1, "expires": 2 * 10**9}).encode(), reply=inbox)
    job = await pulled.next_msg(timeout=5)
    check(job.data == b'{"job_id":"check-1"}', "operator-runner: pulled the client's job")
    ack_reply = runner.nc.new_inbox()
    ack_sub = await runner.nc.subscribe(ack_reply)
    await runner.nc.publish(job.reply, b"+ACK", reply=ack_reply)  # double ack, as durable.rs
    await ack_sub.next_msg(timeout=5)
    check(not runner.violations(job.reply), "operator-runner: acked it (confirmed)")
    ack = await runner.js_publish("hsync.ops.records", b"record", headers={"Nats-Msg-Id": "op-1"})
    check(ack.stream == "HSYNC_RECORDS", f"operator-runner: operation record stored in {ack.stream}")
    ack = await runner.js_publish("$KV.hsync_results.check-1", b"result")
    check(ack.stream == "KV_hsync_results", "operator-runner: result stored in the hsync_results bucket")
    await runner.nc.publish("hsync.jobs.result.check-1", b"result")
    got = await sub.next_msg(timeout=5)
    check(got.data == b"result", "client: received hsync.jobs.result.check-1")
    kv = await client.js.key_value("hsync_results")
    entry = await kv.get("check-1")
    check(entry.value == b"result", "client: read check-1 from the hsync_results bucket (direct get)")
    await runner.publish_refused("hsync.receipts.batches")
    await runner.publish_refused("$KV.hsync_policies.x")
    await runner.publish_refused("$JS.API.CONSUMER.MSG.NEXT.HSYNC_RECORDS.receipt-signer")

    # Large outputs: the runner writes an object (chunk + meta, as async-nats does).
    ack = await runner.js_publish("$O.hsync_outputs.C.nuid1", b"chunk-bytes")
    meta = {"name": "check-1-out", "bucket": "hsync_outputs", "nuid": "nuid1", "size": 11, "chunks": 1}
    ack2 = await runner.js_publish("$O.hsync_outputs.M.Y2hlY2stMS1vdXQ=", json.dumps(meta).encode(),
                                   headers={"Nats-Rollup": "sub"})
    check(ack.stream == ack2.stream == "OBJ_hsync_outputs", "operator-runner: wrote an object (chunk and meta) to hsync_outputs")

    # signer: takes records, publishes a signed batch, holds the lease.
    ack = await signer.js_publish("hsync.receipts.batches", b"batch-1", headers={"Nats-Msg-Id": "batch-1"})
    check(ack.stream == "HSYNC_RECEIPTS", f"receipt-signer: signed batch stored in {ack.stream} (seq {ack.seq})")
    ack = await signer.js_publish("$KV.hsync_signer_lease.leader", b"signer-a")
    check(ack.stream == "KV_hsync_signer_lease", "receipt-signer: took the lease")
    consumer = await signer.api("$JS.API.CONSUMER.CREATE.HSYNC_RECORDS.receipt-signer", {
        "stream_name": "HSYNC_RECORDS", "action": "create",
        "config": {"durable_name": "receipt-signer", "ack_policy": "explicit",
                   "ack_wait": 30 * 10**9, "max_ack_pending": 10000, "deliver_policy": "all"},
    })
    check("error" not in consumer, "receipt-signer: created durable consumer HSYNC_RECORDS/receipt-signer")
    last = await signer.api("$JS.API.STREAM.MSG.GET.HSYNC_RECEIPTS", {"last_by_subj": "hsync.receipts.batches"})
    check("message" in last, "receipt-signer: read the last batch (STREAM.MSG.GET)")
    await signer.publish_refused("hsync.ops.records")
    await signer.publish_refused("hsync.jobs.submit")
    await signer.publish_refused("$KV.hsync_policies.x")

    # indexer, policy-evaluator, geometry-cache, admin.
    consumer = await indexer.api("$JS.API.CONSUMER.CREATE.HSYNC_RECEIPTS.indexer", {
        "stream_name": "HSYNC_RECEIPTS", "action": "create",
        "config": {"durable_name": "indexer", "ack_policy": "explicit",
                   "ack_wait": 30 * 10**9, "max_ack_pending": 10000, "deliver_policy": "all"},
    })
    check("error" not in consumer, "indexer: created durable consumer HSYNC_RECEIPTS/indexer")
    await indexer.publish_refused("hsync.receipts.batches")
    await indexer.publish_refused("$JS.API.STREAM.PURGE.HSYNC_RECEIPTS")
    await evaluator.publish_refused("$KV.hsync_policies.policy.x")
    await geometry.publish_allowed("$KV.hsync_operators.geo.check")
    await geometry.publish_refused("$KV.hsync_operators.const")
    await geometry.publish_refused("hsync.ops.records")
    ack = await admin.js_publish("$KV.hsync_policies.policy.check", b"permit(principal, action, resource);")
    check(ack.stream == "KV_hsync_policies", "admin: wrote a policy to the hsync_policies bucket")
    await admin.publish_refused("hsync.ops.records")
    await admin.publish_refused("hsync.receipts.batches")

    # A client request cannot make a service answer onto a stream subject: it reaches
    # HSYNC through an import, with a reply subject the server makes.
    seen = []

    async def answer_keys(msg):
        seen.append(msg.reply)
        await msg.respond(b"verifier keys")

    keys_sub = await signer.nc.subscribe("hsync.receipts.keys", cb=answer_keys)
    await signer.nc.flush()
    before = (await signer.js.stream_info("HSYNC_RECEIPTS")).state.messages
    await client.nc.publish("hsync.receipts.keys", b"{}", reply="hsync.receipts.batches")
    await client.settle()
    await asyncio.sleep(0.5)
    after = (await signer.js.stream_info("HSYNC_RECEIPTS")).state.messages
    check(seen and all(r.startswith("_R_.") for r in seen) and after == before,
          f"client: a request with reply subject hsync.receipts.batches reached the signer with reply "
          f"{seen[0].split('.')[0] + '.…' if seen else None}; HSYNC_RECEIPTS still holds {after} message(s)")
    reply = await client.nc.request("hsync.receipts.keys", b"{}", timeout=3)
    check(reply.data == b"verifier keys", "client: the same request with its own inbox gets the answer")
    await keys_sub.unsubscribe()

    # The registry, read as `hsync operators show` does (stream info mapped + direct get).
    registry = await client.js.key_value("hsync_operators")
    entry = await registry.get("geo.check")
    check(entry.value == b"x", "client: read geo.check from the hsync_operators bucket")

    # --- replication ---------------------------------------------------------------------
    for base in HTTP:
        j = http_json(base, "/jsz?streams=true&consumers=true")
        check(j.get("streams", 0) >= 8,
              f"{base}: jsz reports {j.get('streams')} streams, {j.get('consumers')} consumers, "
              f"{j.get('messages')} messages on this node (every stream has a replica here)")
    info = await signer.js.stream_info("HSYNC_RECEIPTS")
    before = info.cluster.leader
    peers = [info.cluster.leader] + [r.name for r in info.cluster.replicas]
    check(sorted(peers) == ["nats-1", "nats-2", "nats-3"],
          f"HSYNC_RECEIPTS: leader {before}, replicas {sorted(r.name for r in info.cluster.replicas)}")

    # --- one node down: the R3 streams keep a quorum -------------------------------------
    os.kill(NODE3_PID, signal.SIGTERM)
    for _ in range(60):  # until its monitoring port is closed: the process is gone
        try:
            http_json(HTTP[2], "/healthz")
        except OSError:
            break
        await asyncio.sleep(0.25)
    print(f"....  stopped nats-3 (pid {NODE3_PID}); it no longer answers", flush=True)
    ack = await signer.js_publish_retrying("hsync.receipts.batches", b"batch-2", headers={"Nats-Msg-Id": "batch-2"})
    check(ack.stream == "HSYNC_RECEIPTS", "receipt-signer: with nats-3 down, a signed batch is still stored (2 of 3 replicas)")
    for _ in range(40):
        info = await signer.js.stream_info("HSYNC_RECEIPTS")
        if info.cluster.leader != "nats-3":
            break
        await asyncio.sleep(0.5)
    check(info.state.messages == 2 and info.cluster.leader in ("nats-1", "nats-2"),
          f"HSYNC_RECEIPTS: {info.state.messages} messages, leader {info.cluster.leader} (was {before})")
    ack = await client.js_publish_retrying("hsync.jobs.submit", b'{"job_id":"check-2"}', headers={"Nats-Msg-Id": "check-2"})
    check(ack.stream == "HSYNC_JOBS", "client: durable submit still accepted with nats-3 down")

    # Leave an empty JetStream for check-services.sh: the services create their own
    # streams and buckets (test messages would not decode as records or batches).
    removed = []
    for name in ["HSYNC_RECORDS", "HSYNC_JOBS", "HSYNC_RECEIPTS", "KV_hsync_operators", "KV_hsync_results",
                 "KV_hsync_signer_lease", "KV_hsync_policies", "OBJ_hsync_outputs"]:
        for _ in range(20):
            try:  # the cluster may still be moving leaders after the stop
                reply = await admin.api(f"$JS.API.STREAM.DELETE.{name}")
            except Exception:
                reply = {}
            # An earlier attempt may have deleted it with its answer lost: "not found" (10059).
            if reply.get("success") or (reply.get("error") or {}).get("err_code") == 10059:
                removed.append(name)
                break
            await asyncio.sleep(0.5)
    check(len(removed) == 8, f"admin: deleted the {len(removed)} test streams (the services create their own)")
    for _ in range(60):
        left = [http_json(base, "/jsz").get("streams", 0) for base in HTTP[:2]]  # nats-3 is down
        if not any(left):
            break
        await asyncio.sleep(0.5)
    check(not any(left), f"nats-1 and nats-2 have applied the deletions (streams: {left})")

    for u in users.values():
        await u.close()


def cluster_status():
    """One line per node from /routez and /jsz; True when every node has two routes and
    sees the same JetStream meta leader."""
    lines, leaders, formed, names = [], set(), True, {}
    for base in HTTP:
        try:
            v = http_json(base, "/varz")
            names[v["server_id"]] = v["server_name"]
        except OSError:
            pass
    for base in HTTP:
        try:
            v = http_json(base, "/varz")
            r = http_json(base, "/routez")
            j = http_json(base, "/jsz")
        except OSError as e:
            lines.append(f"{base}: not answering ({e})")
            formed = False
            continue
        meta = j.get("meta_cluster") or {}
        peers = sorted(names.get(x.get("remote_id"), x.get("remote_id")) for x in r.get("routes") or [])
        lines.append(
            f"{v.get('server_name')}: routez num_routes={r.get('num_routes')} to {peers}; "
            f"jsz meta_cluster name={meta.get('name')} leader={meta.get('leader')} "
            f"cluster_size={meta.get('cluster_size')}"
        )
        leaders.add(meta.get("leader"))
        formed = formed and r.get("num_routes", 0) >= 2 and bool(meta.get("leader"))
    return formed and len(leaders) == 1, lines


def wait_formed(timeout=30):
    deadline = time.time() + timeout
    while True:
        formed, lines = cluster_status()
        if formed or time.time() > deadline:
            print("\n".join(lines))
            return formed
        time.sleep(0.5)


def wait_rejoined(node, streams=None, timeout=30):
    """Until node N has its routes back and sees the meta leader (and, if given, holds
    `streams` streams: it caught up with what changed while it was down)."""
    base = HTTP[node - 1]
    deadline = time.time() + timeout
    while True:
        try:
            j = http_json(base, "/jsz")
            r = http_json(base, "/routez")
            name = http_json(base, "/varz").get("server_name")
            leader = (j.get("meta_cluster") or {}).get("leader")
            if leader and r.get("num_routes", 0) >= 2 and (streams is None or j.get("streams", 0) == streams):
                print(f"{name}: back with {r.get('num_routes')} routes, meta leader {leader}, "
                      f"{j.get('streams', 0)} streams")
                return True
        except OSError:
            pass
        if time.time() > deadline:
            print(f"node {node} did not rejoin within {timeout} s")
            return False
        time.sleep(0.5)


def load_nats():
    global nats, NoRespondersError, NatsTimeout, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    global URLS, CA, NODE3_PID
    import nats
    from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    URLS = os.environ["CHECK_URLS"].split(",")
    CA = os.environ["CHECK_CA"]
    NODE3_PID = int(os.environ["CHECK_NODE3_PID"])


if __name__ == "__main__":
    if sys.argv[1:] == ["wait"]:
        sys.exit(0 if wait_formed() else 1)
    if sys.argv[1:2] == ["rejoined"]:
        streams = int(sys.argv[3]) if len(sys.argv) > 3 else None
        sys.exit(0 if wait_rejoined(int(sys.argv[2]), streams) else 1)
    load_nats()
    # asyncio warns about every TLS connection the server closes (nats-3 stopped on purpose).
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(main())
    print()
    if failures:
        print(f"{len(failures)} check(s) failed:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print("check_cluster.py: every check passed")

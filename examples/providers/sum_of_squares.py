#!/usr/bin/env python3
"""An operator provider in Python: serves `acme.sum_of_squares` for HyperSync.

Any program that answers requests on a NATS subject and registers an OperatorDef is an
operator provider. The runner sends an OperatorCall in MessagePack with named fields;
vectors arrive as typed arrays {"shape": [n], "f64": <n little-endian doubles>}, or as
plain lists. The reply is an OperatorOutput, or an error reply with the NATS micro error
headers.

    pip install nats-py msgpack
    hsync operators register examples/providers/sum_of_squares.def.json
    python3 examples/providers/sum_of_squares.py --nats nats://127.0.0.1:4222 &
    hsync run examples/providers/job.json
"""

import argparse
import asyncio
import math
import signal
import struct

import msgpack
import nats

SUBJECT = "acme.ops.sum_of_squares"
ZSTD_HEADER = "Content-Encoding"


def as_vector(value):
    """A typed array or a plain list of numbers -> list of floats (None if neither)."""
    if isinstance(value, dict) and "shape" in value and "f64" in value:
        shape, data = value["shape"], value["f64"]
        if len(shape) != 1 or len(data) != 8 * shape[0]:
            return None
        return list(struct.unpack("<%dd" % shape[0], data))
    if isinstance(value, list) and all(isinstance(x, (int, float)) for x in value):
        return [float(x) for x in value]
    return None


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    nc = await nats.connect(args.nats)

    async def handle(msg):
        headers = msg.headers or {}

        async def error(code, message):
            await nc.publish(msg.reply, msgpack.packb({"code": code, "message": message}), headers={
                "Nats-Service-Error": message,
                "Nats-Service-Error-Code": "400",
                "Hsync-Error-Code": code,
            })

        if headers.get(ZSTD_HEADER, "").lower() == "zstd":
            # Calls above 1 KiB arrive zstd-compressed; this small example does not link zstd.
            return await error("PAYLOAD_TOO_LARGE", "this provider accepts calls up to 1 KiB")
        try:
            call = msgpack.unpackb(msg.data, raw=False)
            v = as_vector(call["args"]["v"])
        except Exception as e:  # malformed input gets an error, never a crash
            return await error("MALFORMED", "cannot read the call: %s" % e)
        if v is None:
            return await error("INVALID_ARGUMENT", "argument `v` must be a vector")
        total = math.fsum(x * x for x in v)
        await msg.respond(msgpack.packb({"output": total, "cached": False}))

    await nc.subscribe(SUBJECT, queue="acme", cb=handle)
    print("serving", SUBJECT, "on", args.nats, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())

"""Load generators for ``python -m bench e2e``, each run as its own process so that its
work never shares the gateway's event loop (nor the GIL):

* ``alarms``: one pendant press every ``--interval`` seconds, each from a new pendant
  (``p<n>``, so none folds into another's open alarm), until ``--count`` presses or
  SIGTERM; then prints ``msg_id <tab> device <tab> monotonic publish time`` lines.
  ``time.monotonic()`` is the system-wide CLOCK_MONOTONIC, the clock the gateway side
  stamps dispatches with.
* ``readings``: hub batches of ``--batch`` SpO2 readings at ``--rate`` readings/s, for
  ``--seconds`` or SIGTERM; prints ``<messages> <readings> <seconds> <cpu seconds>
  <seconds waiting for a CPU>``: CPU close to ``<seconds>`` means the generator itself
  was the limit; a long wait for a CPU, that the machine was.
* ``enqueue``: ``--readings`` readings as hub batches, published as fast as the broker
  takes them (the backlog a fleet of hubs flushes after an outage); prints the same.

    python -m bench._e2e_load alarms --port P --prefix X [--interval 0.05] ...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from datetime import UTC, datetime

import aiomqtt

from telecare.devices.codecs import json_v1

__all__ = ["main"]


def _client(port: int, inflight: int) -> aiomqtt.Client:
    # No timeout: on a loaded machine a niced load generator may wait long for its
    # acknowledgements; it reports the rate it achieved instead of failing.
    return aiomqtt.Client("127.0.0.1", port, max_inflight_messages=inflight, timeout=math.inf)


def _stop_on_sigterm() -> asyncio.Event:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return stop


async def alarms(args: argparse.Namespace) -> None:
    lines: list[str] = []
    stop = _stop_on_sigterm()
    async with _client(args.port, 100) as client:
        start = time.monotonic()
        for n in range(args.count):
            if stop.is_set():
                break
            device = f"p{args.first + n}"
            msg_id = f"a{args.first + n}"
            payload = json_v1.encode_event(msg_id, datetime.now(UTC), "pendant")
            at = time.monotonic()
            await client.publish(f"{args.prefix}/s1/{device}/event", payload, qos=1)
            lines.append(f"{msg_id}\t{device}\t{at!r}")
            # Paced on the schedule, not on the last publish (no drift under load).
            await asyncio.sleep(max(0.0, start + (n + 1) * args.interval - time.monotonic()))
    print("\n".join(lines))


def _batch(prefix: str, tag: str, i: int, size: int, hubs: int, per_hub: int) -> tuple[str, bytes]:
    hub = i % hubs
    ts = datetime.now(UTC).isoformat()
    items = [
        {
            "device_id": f"d{hub * per_hub + (i + j) % per_hub}",
            "channel": "reading",
            "msg_id": f"{tag}{i}-{j}",
            "ts": ts,
            "readings": [{"metric": "spo2", "value": 95 + j % 5, "unit": "%"}],
        }
        for j in range(size)
    ]
    return f"{prefix}/s1/h{hub}/batch", json_v1.encode_batch(f"{tag}{i}", items)


#: Publishes awaiting their PUBACK before the readings generator waits for some: the
#: broker's acknowledgements must not pace the offered rate (a burst that waited for all
#: of its PUBACKs lost a broker round trip per burst on a loaded machine).
_IN_FLIGHT = 2000


async def readings(args: argparse.Namespace) -> None:
    per_s = args.rate / args.batch  # messages a second
    sent = 0
    stop = _stop_on_sigterm()
    pending: set[asyncio.Task[None]] = set()
    async with _client(args.port, 1000) as client:
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= args.seconds or stop.is_set():
                break
            # At most 50 ms worth per round: a starved generator falls behind and says
            # so (the rate it prints), instead of catching up in one giant burst.
            due = min(int(elapsed * per_s) + 1, sent + max(1, int(per_s * 0.05)))
            for i in range(sent, due):
                topic, payload = _batch(
                    args.prefix, args.tag, i, args.batch, args.hubs, args.per_hub
                )
                task = asyncio.create_task(client.publish(topic, payload, qos=1))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent = due
            while len(pending) > _IN_FLIGHT:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # A round every 10 ms, on the schedule: no drift.
            await asyncio.sleep(max(0.0, start + sent / per_s + 0.01 - time.monotonic()))
        elapsed = time.monotonic() - start
        await asyncio.gather(*pending)  # every offered message acknowledged by the broker
    print(sent, sent * args.batch, f"{elapsed:.3f}", f"{time.process_time():.3f}", _cpu_wait())


def _cpu_wait() -> str:
    """Seconds this process was runnable but waited for a CPU (Linux schedstat of the
    main thread; ``nan`` elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as f:
            return f"{int(f.read().split()[1]) / 1e9:.3f}"
    except (OSError, ValueError, IndexError):
        return "nan"


async def enqueue(args: argparse.Namespace) -> None:
    n = -(-args.readings // args.batch)
    async with _client(args.port, 1000) as client:
        start = time.monotonic()
        for first in range(0, n, 500):
            chunk = [
                _batch(args.prefix, args.tag, i, args.batch, args.hubs, args.per_hub)
                for i in range(first, min(n, first + 500))
            ]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))
        elapsed = time.monotonic() - start
    print(n, n * args.batch, f"{elapsed:.3f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._e2e_load")
    parser.add_argument("mode", choices=("alarms", "readings", "enqueue"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--rate", type=float, default=20000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--hubs", type=int, default=500)
    parser.add_argument("--per-hub", type=int, default=2)
    parser.add_argument("--tag", default="r")
    args = parser.parse_args(argv)
    # aiomqtt warns of every publish waiting for its PUBACK beyond 10: the point here.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    run = {"alarms": alarms, "readings": readings, "enqueue": enqueue}[args.mode]
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

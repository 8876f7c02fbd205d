"""``python -m bench news2``: NEWS2 batch scorer vs the scalar scorer, and alarm rules.

Prints, from one run:

* ``score_batch`` sets/s on ``--sets`` observation sets (best of ``--repeat`` runs);
* the project's scalar ``score`` called once per set, as the API path does, timed on a
  sample of ``--sample`` prebuilt :class:`Observation` objects and extrapolated;
* the ratio between them;
* events/s through :class:`rules.alarms.AlarmBook` (priority, folding, restores, closes,
  state kept), with bare ``priority_of`` lookups as the baseline.

Everything runs on one core in this process; the data is synthetic but realistic
(5 % of sets on SpO2 scale 2, 10 % on oxygen, values rounded as devices send them,
some between bands).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from telecare.devices.model import AlarmEvent, EventType, Phase
from telecare.rules.alarms import AlarmBook, priority_of
from telecare.rules.news2 import Observation, score, score_batch

_Arrays = dict[str, npt.NDArray[np.generic]]


def _sets(n: int, seed: int) -> _Arrays:
    rng = np.random.default_rng(seed)

    def clip(a: npt.NDArray[np.float64], lo: float, hi: float, k: float) -> npt.NDArray[np.float64]:
        return np.asarray(np.round(np.clip(a, lo, hi) * k) / k, dtype=np.float64)

    return {
        "respiration_rate": clip(rng.normal(17, 5, n), 0, 100, 1),
        "spo2": clip(rng.normal(95, 3, n), 0, 100, 2),  # half-percent device resolution
        "on_oxygen": rng.random(n) < 0.1,
        "systolic_bp": clip(rng.normal(125, 25, n), 20, 300, 1),
        "pulse": clip(rng.normal(80, 20, n), 0, 350, 1),
        "consciousness": rng.choice(np.array(list("AAAAAAAAAAAACVPU")), n),
        "temperature": clip(rng.normal(37, 0.8, n), 25, 45, 20),  # 0.05 degC steps
        "spo2_scale": np.where(rng.random(n) < 0.05, 2, 1).astype(np.int8),
    }


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _observations(data: _Arrays, k: int) -> list[Observation]:
    return [
        Observation(
            respiration_rate=float(data["respiration_rate"][i]),
            spo2=float(data["spo2"][i]),
            on_oxygen=bool(data["on_oxygen"][i]),
            systolic_bp=float(data["systolic_bp"][i]),
            pulse=float(data["pulse"][i]),
            consciousness=str(data["consciousness"][i]),
            temperature=float(data["temperature"][i]),
            spo2_scale=int(data["spo2_scale"][i]),
        )
        for i in range(k)
    ]


def _events(n: int, seed: int) -> list[AlarmEvent]:
    rng = np.random.default_rng(seed)
    types = list(EventType)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        et = types[int(rng.integers(len(types)))]
        out.append(
            AlarmEvent(
                device_id=f"dev-{int(rng.integers(2000))}",
                type=et,
                phase=Phase.RESTORE if rng.random() < 0.3 else Phase.ALARM,
                ts=t0 + timedelta(seconds=i * 0.05),
                msg_id=f"m{i}",
                resident_id=f"res-{int(rng.integers(1000))}",
            )
        )
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench news2")
    parser.add_argument("--sets", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=50_000, help="scalar sample size")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    data = _sets(args.sets, seed=1)
    batch_s = _best(lambda: score_batch(**data), args.repeat)
    batch_rate = args.sets / batch_s

    sample = _observations(data, min(args.sample, args.sets))
    check = score_batch(**{k: v[: len(sample)] for k, v in data.items()})
    assert all(score(o).total == int(t) for o, t in zip(sample, check.total, strict=True))

    def scalar() -> None:
        for obs in sample:
            score(obs)

    scalar_s = _best(scalar, max(1, args.repeat // 3))
    scalar_rate = len(sample) / scalar_s

    print(f"news2: {args.sets:,} observation sets, one core")
    print(
        f"  score_batch (numpy)        {batch_rate / 1e6:8.2f} M sets/s  ({batch_s * 1e3:.1f} ms)"
    )
    print(
        f"  score (scalar, per set)    {scalar_rate / 1e6:8.3f} M sets/s  "
        f"(sample {len(sample):,}, extrapolated {args.sets / scalar_rate:.1f} s for all)"
    )
    print(f"  ratio batch/scalar         {batch_rate / scalar_rate:8.1f} x")

    events = _events(args.events, seed=2)

    def classify() -> None:
        book = AlarmBook()
        for ev in events:
            book.apply(ev)

    def lookup() -> None:
        for ev in events:
            priority_of(ev.type)

    book_s = _best(classify, 3)
    lookup_s = _best(lookup, 3)
    print(f"alarms: {args.events:,} events over 2,000 devices (30 % restores)")
    print(f"  AlarmBook.apply (stateful) {args.events / book_s / 1e6:8.3f} M events/s")
    print(f"  priority_of (baseline)     {args.events / lookup_s / 1e6:8.3f} M events/s")
    print(f"  ratio lookup/stateful      {book_s / lookup_s:8.1f} x (cost of keeping state)")
    return 0

"""``--against TREE``: one benchmark on two trees in one run, alternating.

    python -m bench ingest --against ../runtime-before --rounds 5 [options]
    python -m bench store --against ../runtime-before --rounds 5 [options]

For each of ``--rounds`` rounds the benchmark runs once (``--rounds 1``) on the other
tree (``before``) and once on this checkout (``current``), each in a fresh process,
alternating which goes first (before-current, current-before, ...), so a machine that
gets busier or quieter during the run moves both sides alike. Each run writes its
figures (rates: higher is better) to a JSON file (``--emit``); this prints, per round,
both sides' figures and the ratio current/before, then the median of each side, the
ratio of the medians, the median of the per-round ratios and their geometric mean with
a 95 % confidence interval (a t interval on the logarithms of the paired ratios: "no
worse" is credible when the interval's lower end is near 1 or above), with the load
average (``os.getloadavg``) before and after.

What runs on each side
    The benchmark module is *this checkout's* file (``bench/ingest.py``,
    ``bench/store.py``), loaded by path in both processes: the same measuring code on
    both sides. ``telecare`` is imported from the side's tree (its directory first on
    ``sys.path``; the process checks and prints where it came from), with this
    checkout's virtual environment, so third-party libraries are the same versions on
    both sides and only the gateway's code differs. A tree is a plain checkout, e.g.
    ``git archive 6e8b851 | tar -x -C ../runtime-before`` (no install needed).

Error handling: a side whose process fails (exit code not 0 or 1: 1 means "target
missed", which still printed figures) stops the comparison with its output.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["side_by_side", "strip_option"]

HERE = Path(__file__).resolve().parents[1]

#: Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then ~normal).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

#: Runs one benchmark module (by path) with ``telecare`` imported from a given tree.
_SIDE = """
import importlib.util, sys
tree, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
import telecare
where = telecare.__file__ or ""
if not where.startswith(tree + "/"):
    raise SystemExit(f"telecare imported from {where}, not from {tree}")
print(f"  telecare from {where}", flush=True)
spec = importlib.util.spec_from_file_location("bench_side", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # dataclasses look their module up there
spec.loader.exec_module(module)
raise SystemExit(module.main(sys.argv[3:]))
"""


def strip_option(argv: list[str], name: str, *, has_value: bool = True) -> list[str]:
    """``argv`` without ``name`` (and its value): ``--name v`` and ``--name=v`` forms."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = has_value
            continue
        if has_value and arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def geometric_mean_ci(ratios: list[float]) -> tuple[float, float, float]:
    """The geometric mean of paired ratios and its 95 % confidence interval (a t
    interval on the logarithms; the interval is the mean itself for one ratio)."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    t = _T95[len(logs) - 2] if len(logs) - 1 <= len(_T95) else 1.96
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _run_side(tree: Path, bench_file: str, argv: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="telecare-bench-against-") as tmp:
        emit = Path(tmp) / "figures.json"
        done = subprocess.run(
            [sys.executable, "-c", _SIDE, str(tree), bench_file, *argv, "--emit", str(emit)],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        print(done.stdout.rstrip(), flush=True)
        if done.returncode not in (0, 1) or not emit.exists():
            print(done.stderr, file=sys.stderr)
            raise RuntimeError(f"the benchmark failed on {tree} (exit {done.returncode})")
        figures: dict[str, float] = json.loads(emit.read_text())
        return figures


def side_by_side(bench_file: str, before: str, argv: list[str], rounds: int) -> int:
    """Run ``bench_file`` with ``argv`` (plus ``--rounds 1 --emit FILE``) ``rounds``
    times on each tree, alternating; print both sides' figures and their ratios."""
    sides = {"before": Path(before).resolve(), "current": HERE}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "current": []}
    argv = [*strip_option(argv, "--rounds"), "--rounds", "1"]
    print(f"side by side: before = {sides['before']}, current = {sides['current']}")
    print(f"  {Path(bench_file).name} {' '.join(argv)}; {rounds} rounds; {_load()}", flush=True)
    for r in range(rounds):
        order = ("before", "current") if r % 2 == 0 else ("current", "before")
        for side in order:
            print(f"round {r + 1}, {side}:", flush=True)
            runs[side].append(_run_side(sides[side], bench_file, argv))
        print(f"round {r + 1} ({_load()}):")
        for name in runs["current"][-1]:
            b, c = runs["before"][-1][name], runs["current"][-1][name]
            print(f"  {name:<40} before {b:12,.2f}  current {c:12,.2f}  ratio {c / b:6.3f}")
    print(f"summary over {rounds} rounds ({_load()}); ratio = current / before:")
    for name in runs["current"][0]:
        before_runs = [f[name] for f in runs["before"]]
        current_runs = [f[name] for f in runs["current"]]
        paired = [c / b for b, c in zip(before_runs, current_runs, strict=True)]
        b, c = statistics.median(before_runs), statistics.median(current_runs)
        mean, low, high = geometric_mean_ci(paired)
        print(
            f"  {name:<40} median before {b:12,.2f}  current {c:12,.2f}"
            f"  ratio {c / b:6.3f}  (per round {' '.join(f'{p:.2f}' for p in paired)};"
            f" median {statistics.median(paired):.3f}; geometric mean {mean:.3f},"
            f" 95 % CI {low:.3f}-{high:.3f})"
        )
    return 0

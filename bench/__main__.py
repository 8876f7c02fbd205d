"""``python -m bench <name> [options]``: run one benchmark module ``bench/<name>.py``.

Each benchmark module exposes ``main(argv: list[str]) -> int`` and prints its figures
together with a baseline measured in the same run and the ratio between them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def _available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main() -> int:
    names = _available()
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print(f"usage: python -m bench {{{','.join(names)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{sys.argv[1]}")
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    raise SystemExit(main())

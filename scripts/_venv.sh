# Sourced by scripts/test and scripts/demo: create or reuse .venv with telecare installed.
VENV="${TELECARE_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.telecare-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi

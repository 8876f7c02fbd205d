"""``telecare --help`` (and so every installer command) starts without the web stack or
the rule engine: FastAPI, Starlette, uvicorn, Jinja2 and numpy are imported only by the
commands that serve or score (``run``, ``demo``, ``simulate``, ...). Each process paid
about 0.4 s for them before."""

from __future__ import annotations

import json
import subprocess
import sys

#: Imported by ``telecare --help`` they would slow every command down.
_HEAVY = ("fastapi", "starlette", "uvicorn", "jinja2", "numpy", "telecare.gateway.web.app")

_PROBE = """
import json, sys
from telecare.gateway.cli.main import main
sys.argv = ["telecare", "--help"]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _help_imports() -> tuple[int, set[str]]:
    """Run ``telecare --help`` in a fresh interpreter; its exit code and ``sys.modules``."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    last = done.stderr.strip().splitlines()[-1]
    found = json.loads(last)
    assert "Usage" in done.stdout, done.stdout
    return int(found["code"] or 0), set(found["modules"])


def test_help_does_not_import_the_web_stack_or_the_rule_engine() -> None:
    code, modules = _help_imports()
    assert code == 0
    assert "telecare.gateway.cli.users" in modules  # the probe did load every command
    loaded = sorted(m for m in modules if m.split(".")[0] in _HEAVY or m in _HEAVY)
    assert loaded == []


def test_user_commands_hash_passwords_without_fastapi() -> None:
    """``telecare user add`` / ``token add`` hash with ``web.credentials``, which is
    free of the web stack (``web.auth`` re-exports it for the app)."""
    probe = (
        "import sys\n"
        "from telecare.gateway.web.credentials import digest, hash_password, new_api_token\n"
        "assert hash_password('x').startswith('$argon2id$')\n"
        "token_id, secret, bearer = new_api_token()\n"
        "assert bearer.startswith('tc_' + token_id + '_') and len(digest(secret)) == 64\n"
        "print('fastapi' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"

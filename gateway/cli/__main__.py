"""``python -m gateway.cli`` is ``telecare``."""

from gateway.cli.main import main

main()

"""``python -m gateway.cli`` is ``telecare``."""

from telecare.gateway.cli.main import main

main()

"""Rules: what telemetry means. NEWS2 scoring (``news2``), alarm priorities and pairing
(``alarms``), time-driven rules (``temporal``), per-site/per-resident settings and the
rules file (``config``), and the ``RuleEngine`` that joins them (``engine``).

Imports only ``devices``; rule state is handed in and out so the gateway can persist it.
"""

"""What devices say: the canonical telemetry model and one pure codec per device format.

No I/O and no asyncio in this package (see ``docs/architecture.md``).
"""

"""Ingest sources: bytes in, envelopes out (MQTT, serial)."""

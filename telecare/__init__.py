"""telecare: telecare and teletriage telemetry gateway.

Sub-packages, in the one direction data and imports flow:
``devices`` (telemetry model, pure codecs) <- ``rules`` (NEWS2, alarm and temporal
rules) <- ``dispatch`` (responders, cascades, lifecycle) <- ``gateway`` (the running
process). ``firmware_stubs`` are simulated devices speaking only the device model.
"""

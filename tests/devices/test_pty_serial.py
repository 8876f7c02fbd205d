"""The CMS50D+ stub and codec over a real pseudo-terminal read with pyserial."""

from __future__ import annotations

import os

import serial

from telecare.devices.codecs import cms50d
from telecare.devices.codecs.oximetry import OximeterSample
from telecare.devices.codecs.registry import CODECS, StreamCodec
from telecare.firmware_stubs.oximeter import run_oximeter


async def test_cms50d_stub_over_a_real_pty() -> None:
    codec = CODECS["cms50d"]
    assert isinstance(codec, StreamCodec)
    master, slave = os.openpty()
    port = serial.Serial(
        os.ttyname(slave),
        baudrate=codec.line.baudrate,
        bytesize=codec.line.bytesize,
        parity=codec.line.parity,
        stopbits=codec.line.stopbits,
        timeout=5,
    )
    os.close(slave)  # pyserial holds its own (raw-mode) descriptor of the slave
    try:
        samples = [OximeterSample(spo2=90 + i % 10, pulse=60 + 2 * i) for i in range(40)] + [
            OximeterSample(spo2=None, pulse=None, finger_out=True)
        ]
        written = await run_oximeter(master, samples, "cms50d", rate_hz=0, noise=0.2, seed=7)
        assert written >= 5 * len(samples)
        data = port.read(written)
        assert len(data) == written
    finally:
        port.close()
        os.close(master)
    dec = cms50d.decoder()
    out = dec.feed(data)
    real = [(s.spo2, s.pulse, s.finger_out) for s in out]
    expected = [(s.spo2, s.pulse, s.finger_out) for s in samples]
    # every real frame arrives in order (noise may add a bogus frame, never remove one)
    it = iter(real)
    assert all(e in it for e in expected)
    assert dec.skipped_bytes > 0  # the injected noise was seen and reported
    assert any(s.pulse is not None and s.pulse > 127 for s in out)

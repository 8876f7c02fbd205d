"""A pluggable pseudo-terminal: a stable port path (a symlink, as udev's
``/dev/serial/by-id/...``) pointing at the slave of a real pty whose master the test
writes to, like a device on a USB serial adapter."""

from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyPort:
    def __init__(self, directory: Path, name: str = "ttyUSB0") -> None:
        self.path = directory / name
        self.master = -1
        self._slave = -1
        self.plug()

    def plug(self) -> None:
        """A new pty behind :attr:`path` (the old one, if any, must be unplugged)."""
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before the reader opens it
        tmp = self.path.with_name(self.path.name + ".new")
        os.symlink(os.ttyname(self._slave), tmp)
        os.replace(tmp, self.path)

    def reader_opened(self) -> None:
        """Drop our slave descriptor once the reader holds its own."""
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def unplug(self) -> None:
        """Close the pty: the reader sees a hang-up / EIO, as when a cable is pulled."""
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.path.unlink(missing_ok=True)

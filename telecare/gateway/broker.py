"""The embedded MQTT broker (amqtt) for ``telecare demo``: no external server needed.

Listens on 127.0.0.1 only, on a free port by default. For production use Mosquitto with
``deploy/mosquitto/`` (persistence, ACLs, per-client queue limits).
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self

from amqtt.broker import Broker

__all__ = ["EmbeddedBroker", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``async with EmbeddedBroker() as broker: broker.port``"""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                },
            }
        )

    async def __aenter__(self) -> Self:
        await self._broker.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._broker.shutdown()

"""Fixtures for the storage tests: a TCP proxy in front of PostgreSQL, and a helper to
build a ``DurableStore`` with test-sized timings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.services import PgServer
from tests.store.proxy import TcpProxy


@pytest.fixture
async def pg_proxy(pg_server: PgServer) -> AsyncIterator[TcpProxy]:
    """A proxy to the test PostgreSQL that the test can cut and restore."""
    parts = urlsplit(pg_server.dsn)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_dsn(pg_server: PgServer, pg_proxy: TcpProxy) -> str:
    """The test DSN with host and port replaced by the proxy's."""
    parts = urlsplit(pg_server.dsn)
    netloc = f"{parts.username}@" if parts.username else ""
    netloc += f"{pg_proxy.host}:{pg_proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))

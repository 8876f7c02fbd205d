"""A simulated SCAIP social-alarm unit: it encodes ``<mrq>`` requests, wraps them in SIP
MESSAGE requests, sends them to a receiver over UDP or TCP and reads the ``<mrs>`` reply,
resending the same request (same ``ref``) until it is acknowledged, as a real unit does.

The encoders are pure and are the reference for the codec's round-trip tests.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import uuid
from dataclasses import dataclass, field

from telecare.devices.codecs import Incomplete, Malformed, scaip, sip

__all__ = [
    "ScaipUnit",
    "encode_message",
    "encode_mrq",
]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def encode_mrq(
    ref: str,
    cid: str,
    dty: str = "0003",
    mty: str | None = "ME",
    stc: str | None = "0010",
    *,
    lco: str | None = None,
    did: str | None = None,
    crd: str | None = "no-voice:",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """An ``<mrq>`` body; ``None`` leaves an element out (``mty`` then defaults to ME)."""
    fields: list[tuple[str, str | None]] = [
        ("ref", ref),
        ("cid", cid),
        ("dty", dty),
        ("mty", mty),
        ("stc", stc),
        ("lco", lco),
        ("did", did),
        ("crd", crd),
        *extra,
    ]
    inner = "".join(f"<{t}>{_escape(v)}</{t}>" for t, v in fields if v is not None)
    return f"<mrq>{inner}</mrq>".encode()


def encode_message(
    body: bytes,
    *,
    from_user: str,
    host: str,
    port: int,
    transport: str = "UDP",
    local: tuple[str, int] = ("127.0.0.1", 5070),
    call_id: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    content_type: str = scaip.CONTENT_TYPE,
    method: str = "MESSAGE",
) -> bytes:
    """A SIP request (MESSAGE by default) from ``from_user`` carrying ``body``."""
    branch = branch or f"z9hG4bK{uuid.uuid4().hex[:16]}"
    headers = (
        ("Via", f"SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{from_user}@{local[0]}>;tag={uuid.uuid4().hex[:8]}"),
        ("To", f"<sip:arc@{host}:{port}>"),
        ("Call-ID", call_id or f"{uuid.uuid4().hex}@{local[0]}"),
        ("CSeq", f"{cseq} {method}"),
    )
    return sip.build_request(
        method, f"sip:arc@{host}:{port}", headers, body, content_type if body else ""
    )


@dataclass
class ScaipUnit:
    """A unit with controller id ``cid`` talking to a receiver at ``host:port``.

    ``send(...)`` returns the decoded ``<mrs>`` and the SIP status; over UDP it resends
    the same datagram (RFC 3261 timer E: 0.5 s doubling, capped at 4 s) until a final
    response arrives or ``timeout`` passes (``TimeoutError``).
    """

    cid: str
    host: str
    port: int
    #: ``UDP``, ``TCP`` or ``TLS`` (then ``tls`` is the client context).
    transport: str = "UDP"
    timeout: float = 10.0
    tls: ssl.SSLContext | None = None
    _refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: A unit never reuses a ref: a fresh session prefix per instance (a restart).
    _session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def next_ref(self) -> str:
        return f"{self._session}-{next(self._refs):06d}"

    async def send(
        self,
        mty: str = "ME",
        stc: str | None = "0010",
        dty: str = "0003",
        *,
        ref: str | None = None,
        lco: str | None = None,
        did: str | None = None,
        body: bytes | None = None,
        from_user: str | None = None,
    ) -> tuple[int, scaip.Mrs | None]:
        ref = ref or self.next_ref()
        payload = (
            body if body is not None else encode_mrq(ref, self.cid, dty, mty, stc, lco=lco, did=did)
        )
        if self.transport == "UDP":
            return await self._udp(payload, from_user or self.cid)
        return await self._tcp(payload, from_user or self.cid)

    async def _udp(self, body: bytes, from_user: str) -> tuple[int, scaip.Mrs | None]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                if not answer.done():
                    answer.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            _Proto, remote_addr=(self.host, self.port)
        )
        try:
            local = transport.get_extra_info("sockname")
            message = encode_message(
                body,
                from_user=from_user,
                host=self.host,
                port=self.port,
                local=(local[0], local[1]),
            )
            delay = 0.5
            async with asyncio.timeout(self.timeout):
                while True:
                    transport.sendto(message)
                    try:
                        data = await asyncio.wait_for(asyncio.shield(answer), delay)
                        break
                    except TimeoutError:
                        delay = min(delay * 2, 4.0)
        finally:
            transport.close()
        return _decode(data)

    async def _tcp(self, body: bytes, from_user: str) -> tuple[int, scaip.Mrs | None]:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls if self.transport == "TLS" else None
            )
            try:
                local = writer.get_extra_info("sockname")
                writer.write(
                    encode_message(
                        body,
                        from_user=from_user,
                        host=self.host,
                        port=self.port,
                        transport=self.transport,
                        local=(local[0], local[1]),
                    )
                )
                await writer.drain()
                buf = b""
                while True:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError("receiver closed the connection without a reply")
                    buf += chunk
                    try:
                        msg, _ = sip.parse(buf, stream=True)
                    except Incomplete:
                        continue
                    break
            finally:
                writer.close()
        return _decode_message(msg)


def _decode(data: bytes) -> tuple[int, scaip.Mrs | None]:
    msg, _ = sip.parse(data, stream=False)
    return _decode_message(msg)


def _decode_message(msg: sip.SipRequest | sip.SipResponse) -> tuple[int, scaip.Mrs | None]:
    if not isinstance(msg, sip.SipResponse):
        raise Malformed("the receiver sent a request, not a response")
    if msg.status == 200 and msg.body:
        return msg.status, scaip.decode_mrs(msg.body)
    return msg.status, None

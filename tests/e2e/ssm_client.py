"""A client of AWS's session-manager data channel, written from the protocol
description in shared/design/ssm-data-channel.md (not from the plugin's code),
and the small RFC 6455 WebSocket client it runs on.

Used by test_exec.py to check that berth's streamUrl speaks what the stock
`session-manager-plugin` speaks: the opening frame with the token, the
handshake, sizes, input, output with acknowledgements, resends of
unacknowledged output, channel_closed. Run as a program it is also a stand-in
for the plugin, with the plugin's command line (argv 1 to 6), so the real
`aws ecs execute-command` flow is tested where the plugin is not installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time
import uuid
from urllib.parse import urlparse

# --- WebSocket (client side, RFC 6455) ---------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(f"WebSocket upgrade refused: {status} {body[:300]!r}")
        self.status = status
        self.body = body


class WebSocket:
    """A blocking WebSocket client: enough for loopback tests."""

    def __init__(self, url: str, headers: dict | None = None, timeout: float = 10):
        u = urlparse(url)
        assert u.scheme == "ws", url
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {u.hostname}:{u.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: Go-http-client/1.1",
        ]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise HandshakeError(0, head)
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            # Read the body for the error message.
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            body = self.buf
            while len(body) < length:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                body += chunk
            self.sock.close()
            raise HandshakeError(status, body)
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert accept in head, "bad Sec-WebSocket-Accept"
        self.closed = False
        self.partial = b""
        self.partial_op = None

    def _send(self, opcode: int, data: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def ping(self, data: bytes = b"keepalive") -> None:
        self._send(OP_PING, data)

    def _frame(self):
        """One whole frame from the buffer as (first byte, payload), or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            (n,) = struct.unpack(">H", b[2:4])
            off = 4
        elif n == 127:
            if len(b) < 10:
                return None
            (n,) = struct.unpack(">Q", b[2:10])
            off = 10
        mask = None
        if b[1] & 0x80:
            if len(b) < off + 4:
                return None
            mask, off = b[off : off + 4], off + 4
        if len(b) < off + n:
            return None
        payload = b[off : off + n]
        if mask:
            payload = bytes(x ^ mask[i % 4] for i, x in enumerate(payload))
        self.buf = b[off + n :]
        return b[0], payload

    def recv(self, timeout: float = 10):
        """The next data message as (opcode, payload); answers pings; (OP_CLOSE, b"") at the end.

        Raises TimeoutError when no whole message arrives in time (what came stays buffered).
        """
        deadline = time.monotonic() + timeout
        while True:
            f = self._frame()
            if f is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    raise TimeoutError
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed = True
                    return OP_CLOSE, b""
                self.buf += chunk
                continue
            b0, payload = f
            op, fin = b0 & 0x0F, b0 & 0x80
            if op == OP_PING:
                self._send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.closed = True
                return OP_CLOSE, payload
            if op != OP_CONT:
                self.partial_op = op
                self.partial = b""
            self.partial += payload
            if fin:
                message, self.partial = self.partial, b""
                return self.partial_op, message

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


# --- the data channel's messages ---------------------------------------------

INPUT = "input_stream_data"
OUTPUT = "output_stream_data"
ACK = "acknowledge"
CLOSED = "channel_closed"

PT_OUTPUT, PT_SIZE, PT_HS_REQUEST, PT_HS_RESPONSE, PT_HS_COMPLETE, PT_FLAG = 1, 3, 5, 6, 7, 10


def encode(message_type: str, seq: int, payload_type: int, payload: bytes, flags: int = 0, message_id=None) -> bytes:
    """HeaderLength 116, space-padded type, big-endian integers, MessageId halves swapped, SHA-256 digest."""
    mid = (message_id or uuid.uuid4()).bytes
    created = int(time.time() * 1000)
    return (
        struct.pack(">I", 116)
        + message_type.encode().ljust(32, b" ")
        + struct.pack(">IQqQ", 1, created, seq, flags)
        + mid[8:16]
        + mid[0:8]
        + hashlib.sha256(payload).digest()
        + struct.pack(">II", payload_type, len(payload))
        + payload
    )


def decode(frame: bytes) -> dict:
    """The fields at their fixed offsets; the payload from HeaderLength + 4 to the end."""
    if len(frame) < 120:
        raise ValueError(f"short message ({len(frame)} bytes)")
    (header_length,) = struct.unpack(">I", frame[0:4])
    message_type = frame[4:36].decode().strip(" \x00")
    schema, created, seq, flags = struct.unpack(">IQqQ", frame[36:64])
    mid = uuid.UUID(bytes=frame[72:80] + frame[64:72])
    digest = frame[80:112]
    payload_type, payload_length = struct.unpack(">II", frame[112:120])
    payload = frame[header_length + 4 :]
    if header_length == 0 or not message_type or created == 0:
        raise ValueError("invalid header")
    if payload_length != 0 and hashlib.sha256(payload).digest() != digest:
        raise ValueError("payload digest mismatch")
    return {
        "type": message_type,
        "schema": schema,
        "created": created,
        "seq": seq,
        "flags": flags,
        "id": mid,
        "payload_type": payload_type,
        "payload_length": payload_length,
        "payload": payload,
    }


def ack_for(m: dict) -> bytes:
    body = {
        "AcknowledgedMessageType": m["type"],
        "AcknowledgedMessageId": str(m["id"]),
        "AcknowledgedMessageSequenceNumber": m["seq"],
        "IsSequentialMessage": True,
    }
    return encode(ACK, 0, 0, json.dumps(body).encode(), flags=3)


class DataChannel:
    """One session over the data channel, as the plugin runs it (§2-§7 of the description).

    `drop_outputs` output messages (ptype 1) are dropped unacknowledged, as the plugin does while
    its handler is not ready, so the server must send them again.
    """

    def __init__(self, stream_url: str, token: str, drop_outputs: int = 0, size=(80, 24)):
        self.ws = WebSocket(stream_url)
        self.ws.ping(b"keepalive")
        self.ws.send_text(
            json.dumps(
                {
                    "MessageSchemaVersion": "1.0",
                    "RequestId": str(uuid.uuid4()),
                    "TokenValue": token,
                    "ClientId": str(uuid.uuid4()),
                    "ClientVersion": "1.2.0.0",
                }
            )
        )
        self.size = size
        self.seq = 0
        self.unacked: dict[int, tuple[bytes, float]] = {}
        self.acked_inputs: list[int] = []
        self.expected = 0
        self.early: dict[int, dict] = {}
        self.output = bytearray()
        self.output_seqs: list[int] = []
        self.drop_outputs = drop_outputs
        self.dropped: list[int] = []
        self.seen: list[dict] = []
        self.handshake: dict | None = None
        self.complete: dict | None = None
        self.closed: dict | None = None
        self.gone = False

    # -- sending --
    def send_input(self, payload_type: int, payload: bytes, seq: int | None = None) -> int:
        """Sends one input_stream_data; keeps it for resending until acknowledged."""
        if seq is None:
            seq = self.seq
            self.seq += 1
        frame = encode(INPUT, seq, payload_type, payload)
        self.ws.send_binary(frame)
        self.unacked[seq] = (frame, time.monotonic())
        return seq

    def type(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if data == b"\n":
            data = b"\r"  # the plugin's quirk
        self.send_input(PT_OUTPUT, data)

    def resize(self, cols: int, rows: int) -> None:
        self.send_input(PT_SIZE, json.dumps({"cols": cols, "rows": rows}).encode())

    # -- receiving --
    def _process(self, m: dict) -> None:
        pt = m["payload_type"]
        if pt == PT_HS_REQUEST:
            self.handshake = json.loads(m["payload"])
            actions = self.handshake.get("RequestedClientActions", [])
            processed = [
                {"ActionType": a["ActionType"], "ActionStatus": 1 if a["ActionType"] == "SessionType" else 3, "ActionResult": None, "Error": ""}
                for a in actions
            ]
            resp = {"ClientVersion": "1.2.0.0", "ProcessedClientActions": processed, "Errors": None}
            self.send_input(PT_HS_RESPONSE, json.dumps(resp).encode())
        elif pt == PT_HS_COMPLETE:
            self.complete = json.loads(m["payload"])
            # The shell handler starts: the size goes first.
            self.resize(*self.size)
        else:
            self.output += m["payload"]
            self.output_seqs.append(m["seq"])

    def _on_output(self, m: dict) -> None:
        seq = m["seq"]
        if seq < self.expected:
            return  # a duplicate: dropped without an ack
        if seq > self.expected:
            self.early[seq] = m
            self.ws.send_binary(ack_for(m))
            return
        handshake = m["payload_type"] in (PT_HS_REQUEST, PT_HS_COMPLETE)
        if not handshake and self.drop_outputs > 0:
            # "handler not ready": dropped without an ack and without advancing.
            self.drop_outputs -= 1
            self.dropped.append(seq)
            return
        if handshake:
            self.ws.send_binary(ack_for(m))
            self._process(m)
        else:
            self._process(m)
            self.ws.send_binary(ack_for(m))
        self.expected += 1
        while self.expected in self.early:
            self._process(self.early.pop(self.expected))
            self.expected += 1

    def pump(self, timeout: float = 0.1) -> None:
        """Reads what arrives within `timeout` and re-sends overdue input."""
        deadline = time.monotonic() + timeout
        while not self.gone:
            now = time.monotonic()
            for seq, (frame, sent) in list(self.unacked.items()):
                if now - sent > 0.2:
                    self.ws.send_binary(frame)
                    self.unacked[seq] = (frame, now)
            left = deadline - now
            if left <= 0:
                return
            try:
                op, data = self.ws.recv(timeout=min(left, 0.1))
            except TimeoutError:
                continue
            if op == OP_CLOSE:
                self.gone = True
                return
            if op == OP_TEXT:
                raise AssertionError(f"the server sent a text frame after the opening: {data!r}")
            m = decode(data)
            self.seen.append(m)
            if m["type"] == ACK:
                body = json.loads(m["payload"])
                seq = body["AcknowledgedMessageSequenceNumber"]
                self.acked_inputs.append(seq)
                self.unacked.pop(seq, None)
            elif m["type"] == OUTPUT:
                self._on_output(m)
            elif m["type"] == CLOSED:
                self.closed = json.loads(m["payload"])
                return

    def wait_for(self, pred, timeout: float = 20, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = pred()
            if r:
                return r
            if self.closed is not None or self.gone:
                r = pred()
                if r:
                    return r
                raise AssertionError(f"the channel closed before {what}: {self.closed}; output {bytes(self.output)!r}")
            self.pump(0.1)
        raise AssertionError(f"{what} not seen within {timeout}s; output {bytes(self.output)!r}")

    def wait_output(self, needle: bytes | str, timeout: float = 20) -> None:
        n = needle.encode() if isinstance(needle, str) else needle
        self.wait_for(lambda: n in self.output, timeout, f"{n!r} in the output")

    def wait_closed(self, timeout: float = 20) -> dict:
        self.wait_for(lambda: self.closed is not None, timeout, "channel_closed")
        return self.closed

    def close(self) -> None:
        self.ws.close()


# --- a stand-in for session-manager-plugin -----------------------------------


def plugin_main(argv: list[str]) -> int:
    """The plugin's command line (§2.1): session JSON, region, StartSession, profile, request JSON, endpoint."""
    if len(argv) == 1:
        print("\nThe Session Manager plugin was installed successfully. Use the AWS CLI to start a session.\n")
        return 0
    log = os.environ.get("FAKE_PLUGIN_LOG")
    if log:
        with open(log, "w") as f:
            json.dump(argv[1:], f)
    session = json.loads(argv[1])
    # Go's JSON decoding matches keys case-insensitively.
    s = {k.lower(): v for k, v in session.items()}
    assert argv[3] == "StartSession", argv
    request = json.loads(argv[5])
    assert isinstance(request.get("Target"), str), request
    sys.stdout.write(f"\nStarting session with SessionId: {s['sessionid']}\n")
    sys.stdout.flush()
    ch = DataChannel(s["streamurl"], s["tokenvalue"], size=(300, 100))
    shown = 0
    while ch.closed is None and not ch.gone:
        ch.pump(0.05)
        if len(ch.output) > shown:
            sys.stdout.buffer.write(bytes(ch.output[shown:]))
            sys.stdout.flush()
            shown = len(ch.output)
        if ch.complete is not None:
            r, _, _ = select.select([sys.stdin], [], [], 0)
            if r:
                data = os.read(sys.stdin.fileno(), 1024)
                if not data:
                    # As the plugin does: the end of its input ends it.
                    sys.stdout.write("\nCannot perform start session: EOF\n")
                    return 0
                ch.type(data)
    if ch.closed is not None:
        out = ch.closed.get("Output", "")
        if out:
            sys.stdout.write(f"\n\nSessionId: {s['sessionid']} : {out}\n\n")
        else:
            sys.stdout.write(f"\n\nExiting session with sessionId: {s['sessionid']}.\n\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(plugin_main(sys.argv))

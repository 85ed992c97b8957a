"""A minimal MQTT 3.1.1 client for the node: never blocks forever, every failure is an OSError.

The node connects for a few seconds per wake, so this client does only what that needs:
CONNECT (clean session, keepalive, last will), PUBLISH at QoS 0 or 1, SUBSCRIBE (QoS 0: the node
only reads retained flags and signed notices), PINGREQ, and reading whatever the broker sends.

* The transport is a socket-like object from the hardware layer (``settimeout``, ``send``,
  ``recv``, ``close``): a real socket on the board, a socket shim or a replay of canned bytes in
  the tests.  A timeout, a closed connection or a malformed packet all raise OSError, so the
  caller has one thing to catch.
* Every read has a deadline taken from ``ticks_ms``; a QoS 1 publish waits ``ack_timeout_ms``
  for its PUBACK and resends with the DUP flag (same packet id, same bytes) up to ``retries``
  times before giving up; the frame stays in the outbox until a PUBACK arrives.
* Incoming PUBLISH packets that arrive while waiting are kept in ``inbox`` (bounded) as
  ``(topic, payload, retained)``.
"""

import struct

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"
DUP = 0x08
RETAIN = 0x01
ETIMEDOUT = 110
MAX_PACKET = 8192 + 256  # the contract's largest node frame plus a topic
HEAD_BUFFER = 128  # a PUBLISH's fixed and variable header with a node topic; longer topics allocate
INBOX_LIMIT = 8


def _encode_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(s):
    data = s if isinstance(s, (bytes, bytearray)) else s.encode()
    return struct.pack(">H", len(data)) + data


def connect_parts(client_id, keepalive_s, will=None, username=None, password=None):
    """CONNECT as a list of byte strings to send in turn (the will payload, a whole frame, is not copied).

    ``will`` is ``(topic, payload, retain)``, published by the broker at QoS 1 when the node is lost.
    """
    flags = 0x02  # clean session
    fields = [_string(client_id)]
    if will is not None:
        flags |= 0x04 | (1 << 3) | (0x20 if will[2] else 0)
        fields += [_string(will[0]), struct.pack(">H", len(will[1])), will[1]]
    if username is not None:
        flags |= 0x80
        fields.append(_string(username))
        if password is not None:
            flags |= 0x40
            fields.append(_string(password))
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive_s)
    length = len(variable) + sum(len(field) for field in fields)
    return [bytes([CONNECT]) + _encode_length(length) + variable] + fields


def connect_packet(client_id, keepalive_s, will=None, username=None, password=None):
    return b"".join(connect_parts(client_id, keepalive_s, will, username, password))


def publish_header(topic, payload_len, qos=0, retain=False, pid=0, dup=False):
    """Everything of a PUBLISH before its payload: the payload is then sent as it is, never copied."""
    flags = PUBLISH | (qos << 1) | (RETAIN if retain else 0) | (DUP if dup else 0)
    variable = _string(topic) + (struct.pack(">H", pid) if qos else b"")
    return bytes([flags]) + _encode_length(len(variable) + payload_len) + variable


def publish_packet(topic, payload, qos=0, retain=False, pid=0, dup=False):
    return publish_header(topic, len(payload), qos, retain, pid, dup) + payload


def subscribe_packet(pid, topic_filters):
    body = struct.pack(">H", pid)
    for topic in topic_filters:
        body += _string(topic) + b"\x00"
    return bytes([SUBSCRIBE]) + _encode_length(len(body)) + body


class MqttClient:
    """One connection to the broker over ``sock``; ``ticks_ms()`` is the board's monotonic clock."""

    def __init__(self, sock, ticks_ms, read_timeout_ms=3000, ack_timeout_ms=2000, retries=2):
        self.sock = sock
        self.ticks_ms = ticks_ms
        self.read_timeout_ms = read_timeout_ms
        self.ack_timeout_ms = ack_timeout_ms
        self.retries = retries
        self.inbox = []
        self.resends = 0
        self.dropped = 0  # incoming messages not kept (inbox full or too large)
        self._pid = 0
        self._head = bytearray(1)  # preallocated: the fixed header is read byte by byte
        self._out = bytearray(HEAD_BUFFER)  # preallocated: every PUBLISH header is built here
        self._out_view = memoryview(self._out)
        self._send_timeout_s = read_timeout_ms / 1000  # a float is a heap object on an ESP32: made once

    # -- connection ------------------------------------------------------------------------------

    def connect(self, client_id, keepalive_s=60, will=None, username=None, password=None):
        """Send CONNECT and wait for a CONNACK that accepts it; OSError otherwise."""
        for part in connect_parts(client_id, keepalive_s, will, username, password):
            self._send(part)
        kind, body = self._read_packet(self._deadline(self.read_timeout_ms))
        if kind != CONNACK or len(body) != 2:
            raise OSError(71, "expected CONNACK, got packet type 0x%02x" % kind)
        if body[1] != 0:
            raise OSError(111, "broker refused the connection (CONNACK code %d)" % body[1])

    def disconnect(self):
        """Polite DISCONNECT (the broker then discards the will) and close; never raises."""
        try:  # noqa: SIM105 - MicroPython has no contextlib
            self._send(DISCONNECT)
        except OSError:
            pass
        self.close()

    def close(self):
        try:  # noqa: SIM105 - MicroPython has no contextlib
            self.sock.close()
        except OSError:
            pass

    # -- operations ------------------------------------------------------------------------------

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish; at QoS 1 return only once the PUBACK came, resending with DUP on each timeout."""
        if qos == 0:
            self._send(self._publish_header(topic, len(payload), 0, retain, 0, False))
            self._send(payload)
            return
        pid = self._next_pid()
        for attempt in range(self.retries + 1):
            self._send(self._publish_header(topic, len(payload), 1, retain, pid, attempt > 0))
            self._send(payload)
            if attempt:
                self.resends += 1
            if self._wait_for(PUBACK, pid, self.ack_timeout_ms):
                return
        raise OSError(ETIMEDOUT, "no PUBACK for packet %d after %d sends" % (pid, self.retries + 1))

    def subscribe(self, topic_filters):
        """Subscribe at QoS 0 and wait for the SUBACK; retained messages then arrive in ``inbox``."""
        pid = self._next_pid()
        self._send(subscribe_packet(pid, topic_filters))
        if not self._wait_for(SUBACK, pid, self.read_timeout_ms):
            raise OSError(ETIMEDOUT, "no SUBACK")

    def ping(self):
        self._send(PINGREQ)
        if not self._wait_for(PINGRESP, None, self.read_timeout_ms):
            raise OSError(ETIMEDOUT, "no PINGRESP")

    def poll(self, duration_ms):
        """Read incoming packets for ``duration_ms`` (retained notices after a SUBACK); quiet is not an error."""
        self._wait_for(None, None, duration_ms)

    # -- internals -------------------------------------------------------------------------------

    def _publish_header(self, topic, payload_len, qos, retain, pid, dup):
        """``publish_header`` written into the preallocated buffer (a view of it); allocates only the topic's bytes."""
        name = topic if isinstance(topic, (bytes, bytearray)) else topic.encode()
        variable = 2 + len(name) + (2 if qos else 0)
        if variable + 5 > HEAD_BUFFER:
            return publish_header(name, payload_len, qos, retain, pid, dup)
        out = self._out
        out[0] = PUBLISH | (qos << 1) | (RETAIN if retain else 0) | (DUP if dup else 0)
        n, i = variable + payload_len, 1
        while True:  # remaining length, 7 bits a byte
            out[i] = (n & 0x7F) | (0x80 if n > 0x7F else 0)
            i += 1
            n >>= 7
            if not n:
                break
        struct.pack_into(">H", out, i, len(name))
        out[i + 2 : i + 2 + len(name)] = name
        i += 2 + len(name)
        if qos:
            struct.pack_into(">H", out, i, pid)
            i += 2
        return self._out_view[:i]

    def _next_pid(self):
        self._pid = self._pid % 0xFFFF + 1
        return self._pid

    def _deadline(self, ms):
        return self.ticks_ms() + ms

    def _wait_for(self, kind, pid, timeout_ms):
        """Read until a packet of ``kind`` (with ``pid``) arrives: True; False when the time is up."""
        deadline = self._deadline(timeout_ms)
        while True:
            try:
                got, body = self._read_packet(deadline)
            except OSError as exc:
                if _is_timeout(exc):
                    return False
                raise
            if got == PUBLISH:
                continue
            if got == kind and (pid is None or (len(body) >= 2 and (body[0] << 8 | body[1]) == pid)):
                return True

    def _send(self, data):
        self.sock.settimeout(self._send_timeout_s)
        view = memoryview(data)
        while len(view):
            sent = self.sock.send(view)
            if not sent:
                raise OSError(104, "connection closed while sending")
            view = view[sent:]

    def _recv_exact(self, n, deadline, into=None):
        buf = into if into is not None else bytearray(n)
        got = 0
        while got < n:
            remaining = deadline - self.ticks_ms()
            if remaining <= 0:
                raise OSError(ETIMEDOUT, "read timed out")
            self.sock.settimeout(remaining / 1000)
            chunk = self.sock.recv(n - got)
            if not chunk:
                raise OSError(104, "connection closed by the broker")
            buf[got : got + len(chunk)] = chunk
            got += len(chunk)
        return buf

    def _read_packet(self, deadline):
        """``(packet type, body)``; incoming PUBLISH packets are unpacked into ``inbox`` on the way."""
        head = self._recv_exact(1, deadline, self._head)[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = self._recv_exact(1, deadline, self._head)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise OSError(71, "malformed remaining length")
        if length > MAX_PACKET:
            raise OSError(90, "packet of %d bytes > %d" % (length, MAX_PACKET))
        body = self._recv_exact(length, deadline) if length else b""
        kind = head & 0xF0
        if kind == PUBLISH:
            self._take_publish(head, body, deadline)
        return kind, body

    def _take_publish(self, head, body, deadline):
        qos = (head >> 1) & 3
        if len(body) < 2:
            raise OSError(71, "PUBLISH too short")
        tlen = struct.unpack(">H", body[:2])[0]
        start = 2 + tlen + (2 if qos else 0)
        if start > len(body):
            raise OSError(71, "PUBLISH topic overruns the packet")
        topic = bytes(body[2 : 2 + tlen]).decode()
        if qos:
            self._send(bytes([PUBACK, 2]) + bytes(body[2 + tlen : start]))
        if len(self.inbox) >= INBOX_LIMIT:
            self.dropped += 1
            return
        self.inbox.append((topic, bytes(body[start:]), bool(head & RETAIN)))


def _is_timeout(exc):
    """CPython raises socket.timeout (errno None) or TimeoutError; MicroPython OSError(ETIMEDOUT)."""
    code = exc.args[0] if exc.args else None
    return code in (ETIMEDOUT, 116, "timed out") or type(exc).__name__ in ("timeout", "TimeoutError")

"""``socket`` on the virtual ESP32: real TCP connections, made by the board process on the host.

Each call is forwarded to ``net.mjs`` and waits for its answer, honouring the socket's timeout
(None blocks, 0 does not wait, t seconds raises OSError(ETIMEDOUT) after t).  Connections need the
station joined to Wi-Fi and reach only the host's loopback and the host names the environment
lists; anything else fails with EHOSTUNREACH, an unknown name with getaddrinfo's -202, as on an
ESP32.  TCP clients and UDP datagrams; no listening sockets on this board.
"""

import binascii
import json

import _board

AF_INET, AF_INET6 = 2, 10
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3
IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP = 0, 6, 17
SOL_SOCKET, SO_REUSEADDR, SO_BROADCAST, SO_KEEPALIVE = 0xFFF, 4, 32, 8
TCP_NODELAY = 1
_ENOTCONN, _EOPNOTSUPP, _EBADF = 107, 95, 9


def _net(request):
    answer = json.loads(_board.net(json.dumps(request)))
    if "errno" in answer:
        raise OSError(answer["errno"])
    return answer


def _resolve(host):
    answer = json.loads(_board.resolve(host))
    if "errno" in answer:
        raise OSError(answer["errno"])
    return answer["addr"]


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(AF_INET, type or SOCK_STREAM, proto, "", (_resolve(host), port))]


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise OSError(_EOPNOTSUPP)
        self._udp = type == SOCK_DGRAM
        self._id = _net({"op": "udp"})["id"] if self._udp else None
        self._peer = None  # a UDP socket's connect() target
        self._timeout_ms = None
        self._closed = False

    def settimeout(self, value):
        self._timeout_ms = None if value is None else max(0, int(value * 1000))

    def setblocking(self, flag):
        self._timeout_ms = None if flag else 0

    def setsockopt(self, level, optname, value):
        pass

    def connect(self, address):
        if self._closed:
            raise OSError(_EBADF)
        host, port = _resolve(address[0]), address[1]
        if self._udp:
            self._peer = (host, port)
            return
        self._id = _net({"op": "connect", "host": host, "port": port, "timeout_ms": self._timeout_ms})["id"]

    def _open_id(self):
        if self._closed:
            raise OSError(_EBADF)
        if self._id is None:
            raise OSError(_ENOTCONN)
        return self._id

    def send(self, data):
        sid = self._open_id()
        if self._udp:
            if self._peer is None:
                raise OSError(_ENOTCONN)
            return self.sendto(data, self._peer)
        return _net({"op": "send", "id": sid, "data": binascii.hexlify(data).decode()})["n"]

    def sendto(self, data, address):
        sid = self._open_id()
        if not self._udp:
            raise OSError(_EOPNOTSUPP)
        request = {"op": "sendto", "id": sid, "host": _resolve(address[0]), "port": address[1]}
        request["data"] = binascii.hexlify(data).decode()
        return _net(request)["n"]

    def recvfrom(self, bufsize):
        sid = self._open_id()
        answer = _net({"op": "recv", "id": sid, "n": bufsize, "timeout_ms": self._timeout_ms})
        return binascii.unhexlify(answer["data"]), (answer.get("host"), answer.get("port"))

    def sendall(self, data):
        view = memoryview(data)
        while len(view):
            view = view[self.send(view):]

    def write(self, data):
        self.sendall(data)
        return len(data)

    def recv(self, bufsize):
        return self.recvfrom(bufsize)[0]

    def read(self, size=-1):
        """Stream read: ``size`` bytes unless the peer closes first; everything to the end when -1."""
        chunks = []
        got = 0
        while size < 0 or got < size:
            chunk = self.recv(4096 if size < 0 else size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def readinto(self, buf, nbytes=-1):
        data = self.read(len(buf) if nbytes < 0 else nbytes)
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            byte = self.recv(1)
            if not byte:
                break
            line += byte
        return line

    def makefile(self, mode="rb", buffering=0):
        return self

    def close(self):
        if self._id is not None and not self._closed:
            _net({"op": "close", "id": self._id})
        self._closed = True

    def bind(self, address):
        raise OSError(_EOPNOTSUPP)

    def listen(self, backlog=0):
        raise OSError(_EOPNOTSUPP)

    def accept(self):
        raise OSError(_EOPNOTSUPP)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

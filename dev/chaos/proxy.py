"""A fault proxy: a TCP forwarder in a thread between the host and one service.

Modes (switch at any time with `set`; existing connections are cut on every switch, so
the host's connection pool meets the new mode at once):

  pass     forward both ways
  refuse   the port is closed: connections are refused (ECONNREFUSED)
  delay    forward, holding each chunk the client sends for `delay_s`
  reset    accept, forward the request, reset the connection (RST) mid-response
  burst    answer the next `n` HTTP requests with `status` (500, 503, 429) and
           `Connection: close`, then forward again

Python standard library only.
"""

from __future__ import annotations

import collections
import re
import selectors
import socket
import struct
import threading
import time

REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _rst(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    def __init__(self, name: str, target: tuple[str, int]):
        self.name = name
        self.target = target
        self.mode = "pass"
        self.delay_s = 0.0
        self.burst_left = 0
        self.burst_status = 503
        self.reset_after = 256
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.counts = {"connections": 0, "refused": 0, "reset": 0, "burst": 0}
        self.bytes = 0   # forwarded both ways: the harness waits for it to stay still
        self.listener: socket.socket | None = None
        self.port = 0
        self._open_listener()
        self.closed = False
        self.trace: collections.Counter | None = None   # request lines, when tracing

    # -- control

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, *, delay_s: float = 0.0, n: int = 0, status: int = 503) -> None:
        assert mode in ("pass", "refuse", "delay", "reset", "burst"), mode
        with self.lock:
            self.mode = mode
            self.delay_s = delay_s
            self.burst_left = n
            self.burst_status = status
            conns = list(self.conns)
            self.conns.clear()
        for c in conns:
            _rst(c)
        if mode == "refuse":
            self._close_listener()
        elif self.listener is None:
            self._open_listener()

    def close(self) -> None:
        self.closed = True
        self._close_listener()
        with self.lock:
            conns = list(self.conns)
            self.conns.clear()
        for c in conns:
            _rst(c)

    # -- listener

    def _open_listener(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):
            try:
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"proxy {self.name}: cannot bind 127.0.0.1:{self.port} again")
        s.listen(128)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True,
                         name=f"proxy-{self.name}").start()

    def _close_listener(self) -> None:
        s, self.listener = self.listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                mode = self.mode
                self.counts["connections"] += 1
                if mode == "burst" and self.burst_left > 0:
                    self.burst_left -= 1
                    self.counts["burst"] += 1
                    status = self.burst_status
                else:
                    status = None
                    if mode == "burst":
                        self.mode = mode = "pass"
            if status is not None:
                threading.Thread(target=self._answer, args=(client, status), daemon=True).start()
            else:
                threading.Thread(target=self._forward, args=(client, mode), daemon=True).start()

    # -- connections

    def _answer(self, client: socket.socket, status: int) -> None:
        """Read one HTTP request and answer it with `status`."""
        try:
            client.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
                if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if head.lower().find(b"expect: 100-continue") < 0:
                while (chunked and not body.endswith(b"0\r\n\r\n")) or \
                        (not chunked and len(body) < length):
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            text = f'{{"error":"chaos proxy {self.name}: injected {status}"}}'.encode()
            client.sendall(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(text)}\r\n"
                "Retry-After: 1\r\nConnection: close\r\n\r\n".encode() + text)
        except OSError:
            pass
        finally:
            client.close()

    def _forward(self, client: socket.socket, mode: str) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _rst(client)
            return
        upstream.settimeout(None)
        with self.lock:
            if self.closed or self.mode != mode:
                _rst(client)
                upstream.close()
                return
            self.conns.add(client)
            self.conns.add(upstream)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        sent_back = 0
        try:
            while True:
                events = sel.select(timeout=1.0)
                if self.closed:
                    break
                done = False
                for key, _ in events:
                    src, dst = key.fileobj, key.data
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    if src is client and self.trace is not None and data[:1].isupper():
                        line = data.split(b"\r\n", 1)[0][:120].decode(errors="replace")
                        with self.lock:
                            self.trace[re.sub(r"\d+", "N", line)] += 1
                    if src is client and mode == "delay" and self.delay_s > 0:
                        time.sleep(self.delay_s)
                    if src is upstream and mode == "reset":
                        room = self.reset_after - sent_back
                        if len(data) >= room:
                            dst.sendall(data[:room])
                            with self.lock:
                                self.counts["reset"] += 1
                            done = True
                            break
                        sent_back += len(data)
                    dst.sendall(data)
                    self.bytes += len(data)
                if done:
                    break
        except OSError:
            pass
        finally:
            sel.close()
            with self.lock:
                self.conns.discard(client)
                self.conns.discard(upstream)
            if mode == "reset":
                _rst(client)
                _rst(upstream)
            else:
                client.close()
                upstream.close()

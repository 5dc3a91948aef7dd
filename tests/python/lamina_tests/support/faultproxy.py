"""A threaded HTTP reverse proxy on 127.0.0.1 that injects registry faults: statuses, dropped connections, delays, death."""
from __future__ import annotations

import http.client
import http.server
import re
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

__all__ = ["Fault", "FaultProxy", "ProxyLogEntry"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_CHUNK = 1 << 16


@dataclass
class Fault:
    """What to do to the next `times` requests whose method and path match.

    action: "status" answers `status` (with `headers`) without asking the registry;
            "drop" reads `after_bytes` of the request body, then resets the connection without an answer;
            "delay" waits `delay` seconds, then forwards the request;
            "die" is "drop", after which the proxy refuses every request until `revive()` (a dead registry).
    """

    action: str
    method: str = "*"
    path: str = ""  # a regular expression searched in the request path ("" matches all)
    status: int = 500
    headers: Tuple[Tuple[str, str], ...] = ()
    delay: float = 0.0
    after_bytes: int = 0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and re.search(self.path, path) is not None


@dataclass(frozen=True)
class ProxyLogEntry:
    method: str
    path: str
    outcome: str  # "forwarded 201", "injected 500", "dropped", "refused (down)", "delayed 2.0s then forwarded 200"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: "FaultProxy"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _reset(self) -> None:
        """Close the client connection with a TCP RST (SO_LINGER 0), as a crashed server would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _body_length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def _read_body(self, n: int) -> None:
        while n > 0:
            data = self.rfile.read(min(n, _CHUNK))
            if not data:
                return
            n -= len(data)

    def _handle(self) -> None:
        proxy = self.server.proxy
        method, path = self.command, self.path
        if proxy.down:
            proxy._record(method, path, "refused (down)")
            self._reset()
            return
        fault = proxy._take(method, path)
        if fault is not None and fault.action == "status":
            self._read_body(self._body_length())
            body = b'{"errors":[{"code":"INJECTED","message":"injected by faultproxy"}]}'
            proxy._record(method, path, f"injected {fault.status}")  # before answering, so tests see it in order
            self.send_response(fault.status)
            for k, v in fault.headers:
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
            return
        if fault is not None and fault.action in ("drop", "die"):
            self._read_body(min(fault.after_bytes, self._body_length()))
            if fault.action == "die":
                proxy.down = True
            proxy._record(method, path, "dropped" if fault.action == "drop" else "dropped (died)")
            self._reset()
            return
        prefix = ""
        if fault is not None and fault.action == "delay":
            time.sleep(fault.delay)
            prefix = f"delayed {fault.delay}s then "
        self._forward(prefix)

    def _forward(self, prefix: str) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            length = self._body_length()
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    upstream.putheader(key, value)
            upstream.endheaders()
            left = length
            while left > 0:
                data = self.rfile.read(min(left, _CHUNK))
                if not data:
                    break
                upstream.send(data)
                left -= len(data)
            resp = upstream.getresponse()
            proxy._record(self.command, self.path, f"{prefix}forwarded {resp.status}")
            body_len = resp.getheader("Content-Length")
            if self.command == "HEAD" or resp.status in (204, 304):
                body: Optional[bytes] = b""
            elif body_len is None:
                body = resp.read()
            else:
                body = None
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() in _HOP_BY_HOP or (body is not None and key.lower() == "content-length"):
                    continue
                self.send_header(key, value)
            if body is not None and self.command != "HEAD":
                self.send_header("Content-Length", str(len(body)))
            elif self.command == "HEAD" and body_len is not None:
                self.send_header("Content-Length", body_len)
            self.end_headers()
            if body is None:
                while True:
                    data = resp.read(_CHUNK)
                    if not data:
                        break
                    self.wfile.write(data)
            elif body:
                self.wfile.write(body)
        except (OSError, http.client.HTTPException) as e:  # the client gave up (timeout) or the registry died
            proxy._record(self.command, self.path, f"{prefix}failed: {e}")
            self.close_connection = True
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class FaultProxy:
    """A reverse proxy in front of `upstream` ("127.0.0.1:PORT"); use as a context manager.

    The Host header is passed through, so the registry builds upload URLs that point back at the proxy.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream_host, self.upstream_port = host, int(port)
        self.down = False
        self.log: List[ProxyLogEntry] = []
        self._faults: List[Fault] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def revive(self) -> None:
        self.down = False

    def _take(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append(ProxyLogEntry(method, path, outcome))

    def entries(self, method: str = "*", path: str = "") -> List[ProxyLogEntry]:
        with self._lock:
            return [e for e in self.log if method in ("*", e.method) and re.search(path, e.path)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

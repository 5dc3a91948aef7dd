"""The few Docker Engine API calls lamina makes, over the engine's unix socket or plain TCP.

An engine process of the Pants plugin (a lookup, an export, a load) runs once per image per build,
and importing the docker SDK (requests, urllib3, paramiko's shims) costs about 0.15 s of each.
This client is the standard library's http.client on the socket DOCKER_HOST names. An engine that
needs more than that (TLS: DOCKER_TLS_VERIFY or DOCKER_CERT_PATH; ssh://; npipe://) is reached
through the docker SDK, wrapped to the same six calls and the same two errors.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Optional

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_TCP_PORT = 2375


class EngineApiError(Exception):
    """The engine answered with an error (`status` is its HTTP status, 0 when it did not answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(EngineApiError):
    """The engine has no such image (HTTP 404)."""


def needs_sdk(environ: Mapping[str, str]) -> bool:
    """Whether DOCKER_HOST's engine is reached only through the docker SDK: over TLS (the SDK's
    rule: DOCKER_CERT_PATH, or a non-empty DOCKER_TLS_VERIFY), or by a scheme other than unix://
    and tcp:// (ssh://, npipe://)."""
    if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
        return True
    host = (environ.get("DOCKER_HOST") or "").strip() or DEFAULT_HOST
    return not (host.startswith("unix://") or host.startswith("tcp://") or host.startswith("http://"))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_message(body: bytes, status: int) -> str:
    try:
        message = json.loads(body.decode("utf-8", "replace")).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body.decode("utf-8", "replace").strip() or f"HTTP {status}")


def _image_path(name: str, what: str) -> str:
    # The engine's router takes the rest of the path as the name (slashes and all), as the SDK sends it.
    return f"/images/{urllib.parse.quote(name, safe='/:@')}/{what}"


def json_messages(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The JSON values of a streamed reply (the engine writes one per line; any whitespace between)."""
    import codecs

    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # a character split across reads stays whole
    text = ""
    for data in chunks:
        text += utf8.decode(data)
        while True:
            text = text.lstrip()
            if not text:
                break
            try:
                value, end = decoder.raw_decode(text)
            except ValueError:
                break  # incomplete: wait for more
            yield value
            text = text[end:]
    if text.strip():
        raise EngineApiError(f"the engine's reply ends inside a message: {text.strip()[:200]!r}")


class SocketApi:
    """The engine API over DOCKER_HOST's unix socket or plain TCP; one connection per call."""

    def __init__(self, host: str, timeout: float) -> None:
        self.timeout = timeout
        host = host.strip()
        if host.startswith("unix://"):
            self._unix: Optional[str] = host[len("unix://"):] or "/var/run/docker.sock"
            self._tcp = ("", 0)
        else:
            parsed = urllib.parse.urlsplit(host.replace("tcp://", "http://", 1))
            self._unix = None
            try:
                port = parsed.port
            except ValueError as e:  # not a number, or out of range
                raise EngineApiError(f"DOCKER_HOST={host!r} names no usable port ({e})") from None
            if parsed.path.strip("/"):
                raise EngineApiError(f"DOCKER_HOST={host!r} has a path; lamina reaches an engine at a host and port only")
            self._tcp = (parsed.hostname or "localhost", port or DEFAULT_TCP_PORT)

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, self.timeout)
        return http.client.HTTPConnection(self._tcp[0], self._tcp[1], timeout=self.timeout)

    def _open(self, method: str, path: str, body: Any = None,
              headers: Optional[Mapping[str, str]] = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; the connection and its response (status checked), for the caller to read and close."""
        conn = self._connection()
        try:
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
            except (BrokenPipeError, ConnectionResetError) as sent:
                # The engine answered before it read the whole body (a refusal) and closed: its
                # answer says why, not the broken pipe.
                try:
                    reply = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise sent from None
            else:
                reply = conn.getresponse()
            if reply.status >= 400:
                message = _error_message(reply.read(64 * 1024), reply.status)
                # a 404 of another kind (an unknown route: an engine too old, a proxy) is no missing image
                missing = reply.status == 404 and "no such image" in message.lower()
                raise (NotFound if missing else EngineApiError)(message, reply.status)
        except BaseException:
            conn.close()
            raise
        return conn, reply

    def _get_json(self, path: str) -> Any:
        conn, reply = self._open("GET", path)
        try:
            return json.loads(reply.read())
        except ValueError as e:
            raise EngineApiError(f"the engine's reply to GET {path} is not JSON ({e})") from e
        finally:
            conn.close()

    def ping(self) -> None:
        conn, reply = self._open("GET", "/_ping")
        try:
            reply.read()
        finally:
            conn.close()

    def inspect_image(self, name: str) -> dict:
        found = self._get_json(_image_path(name, "json"))
        if not isinstance(found, dict):
            raise EngineApiError(f"the engine's description of {name!r} is not a JSON object")
        return found

    def image_ids(self) -> list[str]:
        """The IDs of every image, intermediate ones included (`docker images -aq`)."""
        listed = self._get_json("/images/json?all=1")
        return [str(item["Id"]) for item in listed if isinstance(item, dict) and "Id" in item] if isinstance(listed, list) else []

    def list_images(self) -> list:
        """The engine's image list (`docker images`: each with its Id and RepoTags), as it sends it."""
        listed = self._get_json("/images/json")
        return listed if isinstance(listed, list) else []

    def get_image(self, name: str, chunk_size: int) -> Iterator[bytes]:
        """`docker save` of `name`, as the engine streams it."""
        conn, reply = self._open("GET", _image_path(name, "get"))
        try:
            while True:
                data = reply.read(chunk_size)
                if not data:
                    return
                yield data
        finally:
            conn.close()

    def load_image(self, body: Iterable[bytes]) -> Iterator[Any]:
        """POST /images/load of a tarball sent in chunks; the engine's JSON messages."""
        conn, reply = self._open("POST", "/images/load", body=iter(body),
                                 headers={"Content-Type": "application/x-tar"})
        try:
            yield from json_messages(iter(lambda: reply.read1(64 * 1024), b""))
        finally:
            conn.close()


class SdkApi:
    """The same calls through the docker SDK (for TLS and ssh:// engines); its errors mapped to ours."""

    def __init__(self, environ: Mapping[str, str], timeout: float) -> None:
        import docker

        self._docker = docker
        with self._errors():
            self._api = docker.from_env(environment=dict(environ), timeout=int(timeout)).api

    @contextmanager
    def _errors(self) -> Iterator[None]:
        errors = self._docker.errors
        try:
            yield
        except errors.ImageNotFound as e:
            raise NotFound(str(e), 404) from e
        except errors.DockerException as e:
            raise EngineApiError(str(e), getattr(getattr(e, "response", None), "status_code", 0) or 0) from e

    def ping(self) -> None:
        with self._errors():
            self._api.ping()

    def inspect_image(self, name: str) -> dict:
        with self._errors():
            return dict(self._api.inspect_image(name))

    def image_ids(self) -> list[str]:
        with self._errors():
            return [str(i) for i in self._api.images(all=True, quiet=True)]

    def list_images(self) -> list:
        with self._errors():
            return list(self._api.images())

    def get_image(self, name: str, chunk_size: int) -> Iterator[bytes]:
        with self._errors():
            yield from self._api.get_image(name, chunk_size=chunk_size)

    def load_image(self, body: Iterable[bytes]) -> Iterator[Any]:
        with self._errors():
            yield from self._api.load_image(body)


def open_api(environ: Mapping[str, str], timeout: float) -> "SocketApi | SdkApi":
    """The API of the engine the environment names (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)."""
    if needs_sdk(environ):
        return SdkApi(environ, timeout)
    return SocketApi(environ.get("DOCKER_HOST") or DEFAULT_HOST, timeout)

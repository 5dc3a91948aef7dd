from __future__ import annotations

import http.server
import json
import os
import re
import socketserver
import threading
from typing import Iterator

import pytest

from lamina.daemon import DaemonError, connect, engine_chain_ids, listed_names, resolve
from lamina.engine_api import EngineApiError, NotFound, SocketApi, json_messages, needs_sdk, open_api

SAVED = bytes(range(256)) * 5000  # 1.28 MB: several reads of any chunk size


class _Engine(http.server.BaseHTTPRequestHandler):
    """Just enough of the engine API for the client: two images, a save stream and a load."""

    protocol_version = "HTTP/1.1"
    loaded: list = []

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass

    def _reply(self, status: int, body: bytes, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 70_000):
                piece = body[i:i + 70_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        app = {"Id": "sha256:" + "a" * 64, "RootFS": {"Layers": ["sha256:" + "1" * 64]}}
        images = {"/images/lamina/app:1/json": app, "/images/sha256:" + "a" * 64 + "/json": app,
                  "/images/sha256:" + "b" * 64 + "/json": {"Id": "sha256:" + "b" * 64}}
        self.path = re.sub(r"^/v1\.\d+/", "/", self.path)  # the SDK's paths name an API version
        if self.path == "/_ping":
            self._reply(200, b"OK")
        elif self.path == "/version":
            self._reply(200, b'{"ApiVersion": "1.41"}')
        elif self.path in images:
            self._reply(200, json.dumps(images[self.path]).encode())
        elif self.path in ("/images/json", "/images/json?only_ids=0&all=0"):  # ours, the SDK's
            listed = [{"Id": "sha256:" + "a" * 64, "RepoTags": ["lamina/app:1", "lamina/app:latest", "localhost:5000/x:latest",
                                                               "sha256:" + "d" * 64]},  # a tag spelled like an ID
                      {"Id": "sha256:" + "b" * 64, "RepoTags": None},  # dangling: an ID only
                      {"Id": "sha256:" + "c" * 64, "RepoTags": ["<none>:<none>"]}, {"Id": 7}, "junk"]
            self._reply(200, json.dumps(listed).encode())
        elif self.path == "/images/json?all=1":
            self._reply(200, json.dumps([{"Id": "sha256:" + "a" * 64}, {"Id": "sha256:" + "c" * 64}]).encode())
        elif self.path == "/images/lamina/app:1/get":
            self._reply(200, SAVED, chunked=True)
        elif self.path.startswith("/images/route"):
            self._reply(404, b"page not found")
        elif self.path.startswith("/images/broken"):
            self._reply(500, b'{"message":"the layer store is on fire"}')
        else:
            self._reply(404, b'{"message":"No such image: %s"}' % self.path.encode())

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/images/load?refuse=1":  # answers before reading the body, and hangs up
            self._reply(500, b'{"message":"no space left on device"}')
            self.close_connection = True
            return
        assert self.path == "/images/load" and self.headers["Transfer-Encoding"] == "chunked"
        body = b""
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        _Engine.loaded.append(body)
        messages = b'{"stream":"Loaded image: lamina/app:1\\n"}\r\n{"stream":"done"}\r\n'
        self._reply(200, messages, chunked=True)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine_socket() -> Iterator[str]:
    import shutil
    import tempfile

    short = tempfile.mkdtemp(prefix="le-", dir="/tmp")  # a socket's path has a length limit (108 bytes)
    path = os.path.join(short, "docker.sock")
    server = _UnixServer(path, _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(short, ignore_errors=True)


def test_the_socket_client_asks_the_engine_without_the_docker_sdk(engine_socket: str) -> None:
    env = {"DOCKER_HOST": f"unix://{engine_socket}"}
    engine = connect(env, timeout=10)
    assert isinstance(engine.api, SocketApi)
    assert resolve(engine, "lamina/app:1") == "sha256:" + "a" * 64
    assert resolve(engine, "sha256:" + "b" * 64) == "sha256:" + "b" * 64
    with pytest.raises(DaemonError, match=r"no image 'nope:1' in the Docker engine at DOCKER_HOST=unix://"):
        resolve(engine, "nope:1")
    with pytest.raises(DaemonError, match="the layer store is on fire"):
        resolve(engine, "broken:1")
    # the image that is listed but gone by the time it is inspected is skipped
    assert engine_chain_ids(engine) == frozenset({"sha256:" + "1" * 64})


def test_one_list_of_the_engine_answers_for_its_tags_and_ids(engine_socket: str) -> None:
    a, b, c = ("sha256:" + x * 64 for x in "abc")
    names = listed_names(connect({"DOCKER_HOST": f"unix://{engine_socket}"}, timeout=10))
    # a :latest tag also answers without it, as the engine's own lookup does; junk entries are skipped
    assert names == {"lamina/app:1": a, "lamina/app:latest": a, "lamina/app": a, "localhost:5000/x:latest": a,
                     "localhost:5000/x": a, a: a, b: b, c: c}


def test_a_failed_list_is_one_line_naming_the_engine(engine_socket: str) -> None:
    engine = connect({"DOCKER_HOST": f"unix://{engine_socket}"}, timeout=10)

    class Broken:
        def list_images(self) -> list:
            raise EngineApiError("the layer store is on fire", 500)

    with pytest.raises(DaemonError, match=r"listing the images of the Docker engine at DOCKER_HOST=unix://.*on fire"):
        listed_names(type(engine)(Broken(), engine.name))


def test_a_save_streams_in_chunks_and_a_load_sends_its_body_chunked(engine_socket: str) -> None:
    api = SocketApi(f"unix://{engine_socket}", timeout=10)
    pieces = list(api.get_image("lamina/app:1", chunk_size=100_000))
    assert b"".join(pieces) == SAVED and max(map(len, pieces)) <= 100_000 and len(pieces) > 5
    body = [b"x" * 300_000, b"", b"y" * 10]
    messages = list(api.load_image(iter(body)))
    assert messages == [{"stream": "Loaded image: lamina/app:1\n"}, {"stream": "done"}]
    assert _Engine.loaded[-1] == b"".join(body)


def test_an_engine_that_does_not_answer_is_named() -> None:
    with pytest.raises(DaemonError, match=r"cannot reach the Docker engine at DOCKER_HOST=unix:///nonexistent/d.sock"):
        connect({"DOCKER_HOST": "unix:///nonexistent/d.sock"}, timeout=5)


def test_json_messages_are_read_across_chunk_boundaries_and_a_cut_one_is_an_error() -> None:
    text = b'{"stream":"a"}\r\n{"errorDetail":{"message":"open /x: no such file"},"error":"x"}\n'
    split = [text[i:i + 7] for i in range(0, len(text), 7)]
    assert [m.get("stream") or m["errorDetail"]["message"] for m in json_messages(split)] == ["a", "open /x: no such file"]
    with pytest.raises(EngineApiError, match="ends inside a message"):
        list(json_messages([b'{"stream": "a']))


def test_tls_ssh_and_npipe_engines_go_through_the_sdk_and_tcp_does_not() -> None:
    assert not needs_sdk({})
    assert not needs_sdk({"DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert not needs_sdk({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": ""})
    assert needs_sdk({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1"})
    assert needs_sdk({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_CERT_PATH": "/certs"})
    assert needs_sdk({"DOCKER_HOST": "ssh://me@host"})
    api = open_api({"DOCKER_HOST": "tcp://10.1.2.3"}, timeout=1)
    assert isinstance(api, SocketApi) and api._tcp == ("10.1.2.3", 2375)


def test_an_engine_that_refuses_a_load_before_reading_it_is_heard(engine_socket: str) -> None:
    api = SocketApi(f"unix://{engine_socket}", timeout=10)
    body = (b"z" * 1024 * 1024 for _ in range(64))  # far more than the socket buffers hold
    with pytest.raises(EngineApiError, match="no space left on device") as raised:
        conn, reply = api._open("POST", "/images/load?refuse=1", body=body,
                                headers={"Content-Type": "application/x-tar"})
    assert raised.value.status == 500
    # a 404 that is not about an image (an unknown route) is not a missing image
    with pytest.raises(EngineApiError, match="page not found") as other:
        api.inspect_image("route")
    assert not isinstance(other.value, NotFound)


def test_a_docker_host_lamina_cannot_use_is_one_line() -> None:
    for host, said in (("tcp://127.0.0.1:99999", "names no usable port"), ("tcp://h:abc", "names no usable port"),
                       ("tcp://h:2375/prefix", "has a path")):
        with pytest.raises(DaemonError, match=f"cannot reach the Docker engine at DOCKER_HOST={host}.*{said}"):
            connect({"DOCKER_HOST": host}, timeout=1)
    assert not needs_sdk({"DOCKER_HOST": " unix:///var/run/docker.sock "})
    assert needs_sdk({"DOCKER_HOST": "npipe:////./pipe/docker_engine"})


def _real_engine() -> bool:
    try:
        SocketApi("unix:///var/run/docker.sock", timeout=10).ping()
        return True
    except (OSError, EngineApiError):
        return False


@pytest.mark.skipif(not _real_engine(), reason="no local Docker engine answering on /var/run/docker.sock")
def test_the_real_engine_answers_the_socket_client() -> None:
    api = SocketApi("unix:///var/run/docker.sock", timeout=30)
    api.ping()
    with pytest.raises(NotFound):
        api.inspect_image("lamina-no-such-image:never")
    assert all(i.startswith("sha256:") for i in api.image_ids())
    assert all(item["Id"].startswith("sha256:") for item in api.list_images())
    # The names the list answers for an image this test owns (others' tags may move while it
    # runs) are what the engine's own lookup answers: a tag, a :latest tag without it, the ID.
    import io
    import subprocess
    import tarfile

    repo = f"lamina-list-test-{os.getpid()}"
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tf:
        info = tarfile.TarInfo("owned")
        data = repo.encode()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    subprocess.run(["docker", "import", "-", f"{repo}:latest"], input=body.getvalue(), check=True, capture_output=True)
    try:
        subprocess.run(["docker", "tag", f"{repo}:latest", f"{repo}:v1"], check=True, capture_output=True)
        engine = connect({"DOCKER_HOST": "unix:///var/run/docker.sock"}, timeout=30)
        names = listed_names(engine)
        for name in (f"{repo}:latest", repo, f"{repo}:v1", names[f"{repo}:v1"]):
            assert resolve(engine, name) == names[name], name
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"{repo}:latest", f"{repo}:v1"], capture_output=True)


def test_the_sdk_client_maps_its_errors_to_the_same_two(engine_socket: str) -> None:
    from lamina.engine_api import SdkApi

    api = SdkApi({"DOCKER_HOST": f"unix://{engine_socket}"}, timeout=10)
    assert api.inspect_image("sha256:" + "b" * 64)["Id"] == "sha256:" + "b" * 64
    assert [item["Id"] for item in api.list_images()[:2]] == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    with pytest.raises(NotFound):
        api.inspect_image("nope:1")
    with pytest.raises(EngineApiError, match="on fire") as raised:
        api.inspect_image("broken:1")
    assert raised.value.status == 500
    assert b"".join(api.get_image("lamina/app:1", chunk_size=65536)) == SAVED

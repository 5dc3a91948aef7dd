"""Registry API operations (manifests, blob HEAD/GET/mount/upload), hand-written on urllib3.

Why not a library: python-dxf 12.1.1 and oras 0.2.43 were read against what lamina needs.
python-dxf has no retries at all, uploads only monolithically (one PUT), refuses to authenticate
over plain HTTP (so a loopback registry with a password cannot be used), forces the token realm to
https and does not read the Docker config; its mount_blob is fine. oras has no cross-repo mount,
sets no timeouts, and its retry decorator catches bare Exception, re-sends every failed request
(including PATCHes whose stream is spent) and ignores 429/Retry-After; it also pulls in jsonschema.
Adapting either would mean wrapping or replacing most of it, so lamina carries ~500 lines of its
own on urllib3 (already installed with the docker SDK; pinned in 3rdparty/python/requirements.txt),
which gives direct control of timeouts, streaming bodies and redirects.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO, Optional

import urllib3

from lamina.blobs import CHUNK, Opener, Window, copy_stream, verified
from lamina.errors import DigestMismatch, shown
from lamina.model import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Descriptor, sha256_digest
from lamina.registry.errors import NotFound, RegistryError, RegistryUnreachable
from lamina.registry.reference import Reference
from lamina.registry.retry import Attempts
from lamina.registry.transport import (
    TRANSIENT_EXCEPTIONS,
    RegistryOptions,
    Transport,
    TransientError,
    error_codes,
    fail,
    final_error,
    reason,
)

MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST))
MANIFEST_LIMIT = 4 << 20  # the distribution spec's limit on manifest size
CONFIG_LIMIT = 64 << 20


def pull_scope(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def push_scope(repo: str, *mount_from: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",) + tuple(f"repository:{r}:pull" for r in mount_from if r != repo)


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as the registry sent it, with the digest of exactly those bytes."""

    media_type: str
    digest: str
    data: bytes





def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class RegistryClient:
    """Operations on one registry; holds its connection pool and tokens, so reuse it for a whole command."""

    def __init__(self, registry: str, options: RegistryOptions, transport: Optional[Transport] = None) -> None:
        self.registry = registry
        self.options = options
        self.transport = transport or Transport(_api_host(registry), options)
        # Bytes of manifests and blobs received (bodies as sent, resumed reads included): what a
        # command downloaded, for its summary.
        self.received = 0

    @property
    def host(self) -> str:
        return self.transport.host

    # -- manifests -------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> FetchedManifest:
        """The manifest or index `ref` names (its digest if it has one, else its tag), checked by digest."""
        what = ref.url
        reply = self.transport.request("GET", f"/v2/{ref.repository}/manifests/{ref.target}",
                                       scopes=pull_scope(ref.repository), what=what,
                                       headers={"Accept": MANIFEST_ACCEPT}, limit=MANIFEST_LIMIT)
        if reply.status == 404:
            raise self._manifest_not_found(ref, error_codes(reply.body))
        if reply.status != 200:
            raise fail(reply, what, self.host)
        self.received += len(reply.body)
        digest = sha256_digest(reply.body)
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"{what}: the registry sent a manifest whose digest is {digest}")
        header = reply.header("Docker-Content-Digest")
        if header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"{what}: the registry says the manifest is {header}, its bytes are {digest}")
        media_type = reply.header("Content-Type").split(";")[0].strip()
        return FetchedManifest(media_type, digest, reply.body)

    def _manifest_not_found(self, ref: Reference, codes: str) -> NotFound:
        """A 404's error, telling an unknown repository from an unknown tag (registries answer both alike)."""
        what = ref.url
        tags: Optional[list] = None
        if "NAME_UNKNOWN" not in codes:
            try:
                reply = self.transport.request("GET", f"/v2/{ref.repository}/tags/list?n=100",
                                               scopes=pull_scope(ref.repository), what=what)
            except RegistryError:
                reply = None
            if reply is not None and reply.status == 200:
                try:
                    found = json.loads(reply.body).get("tags")
                    tags = sorted(shown(t) for t in found if isinstance(t, str)) if isinstance(found, list) else []
                except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
                    tags = None
            elif reply is not None and reply.status == 404:
                codes = "NAME_UNKNOWN"
        if "NAME_UNKNOWN" in codes or tags == []:
            return NotFound(f"{what}: repository {ref.repository} is not known to {self.host} "
                            "(no such repository, or it has no tags); check the name")
        kind = "digest" if ref.digest else "tag"
        known = f"; it has tags {', '.join(tags[:10])}{', ...' if len(tags) > 10 else ''}" if tags else ""
        return NotFound(f"{what}: {self.host}/{ref.repository} has no manifest for {kind} {ref.target}{known}")

    def put_manifest(self, ref: Reference, media_type: str, data: bytes) -> str:
        """Store a manifest under `ref`'s tag (or digest); returns its digest, checked against the registry's."""
        return self.put_manifest_subject(ref, media_type, data)[0]

    def put_manifest_subject(self, ref: Reference, media_type: str, data: bytes) -> tuple[str, str]:
        """put_manifest, and the registry's `OCI-Subject` header ("" without one): a registry with the
        referrers API names there the subject of a manifest that has one (distribution-spec 1.1)."""
        what = f"{ref.url}: manifest"
        digest = sha256_digest(data)
        reply = self.transport.request("PUT", f"/v2/{ref.repository}/manifests/{ref.target}",
                                       scopes=push_scope(ref.repository), what=what,
                                       headers={"Content-Type": media_type}, body=data)
        if reply.status not in (200, 201):
            raise fail(reply, what, self.host)
        said = reply.header("Docker-Content-Digest")
        if said.startswith("sha256:") and said != digest:
            raise DigestMismatch(f"{what}: the registry stored it as {said}, lamina sent {digest}")
        return digest, reply.header("OCI-Subject")

    # -- reading blobs ---------------------------------------------------------------------------

    def head_blob(self, repo: str, digest: str, scopes: Optional[tuple[str, ...]] = None) -> Optional[int]:
        """The blob's size if `repo` has it, else None."""
        what = f"{self.registry}/{repo}: blob {digest}"
        reply = self.transport.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes or pull_scope(repo),
                                       what=what)
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise fail(reply, what, self.host)
        length = reply.header("Content-Length")
        return int(length) if length.isdigit() else -1

    def get_blob_bytes(self, repo: str, desc: Descriptor, what: str) -> bytes:
        """A small blob (a config) in memory, checked against its descriptor."""
        if desc.size > CONFIG_LIMIT:
            raise RegistryError(f"{what}: {desc.size} bytes is too large for a config")
        with verified(lambda: self.open_blob(repo, desc.digest, what), desc.digest, desc.size, what) as f:
            return f.read()

    def open_blob(self, repo: str, digest: str, what: str = "") -> BinaryIO:
        """The blob's bytes as a stream that resumes (Range) after a broken connection; not verified here."""
        return io.BufferedReader(_BlobStream(self, repo, digest, what or f"{self.registry}/{repo}: blob {digest}"),
                                 CHUNK)  # type: ignore[return-value]

    def fetch_blob(self, repo: str, desc: Descriptor, path: str) -> None:
        """Download a blob to `path` in chunks (via a temporary file beside it), verified by digest and size."""
        what = f"{self.registry}/{repo}: blob {desc.digest}"
        parent = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".lamina-tmp-", dir=parent)
        try:
            with os.fdopen(fd, "wb") as out, verified(lambda: self.open_blob(repo, desc.digest, what),
                                                      desc.digest, desc.size, what) as src:
                copy_stream(src, out)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # -- writing blobs ---------------------------------------------------------------------------

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> Optional[str]:
        """Ask the registry to link `digest` from `from_repo` into `repo`.

        None when mounted (201); otherwise the upload URL of the session the registry opened instead (202).
        """
        what = f"{self.registry}/{repo}: mount {digest} from {from_repo}"
        reply = self.transport.request(
            "POST", f"/v2/{repo}/blobs/uploads/?" + urllib.parse.urlencode({"mount": digest, "from": from_repo}),
            scopes=push_scope(repo, from_repo), what=what, headers={"Content-Length": "0"})
        if reply.status == 201:
            return None
        if reply.status == 202 and reply.header("Location"):
            return self.transport.url(reply.header("Location"))
        raise fail(reply, what, self.host)

    def upload_blob(self, repo: str, desc: Descriptor, opener: Opener, location: Optional[str] = None,
                    what: str = "", diff_id: Optional[tuple[str, str]] = None) -> int:
        """Upload a blob from `opener` (a fresh stream per attempt): one PUT when small, PATCH chunks when large.

        After a transient failure the blob is looked up (the commit may have landed before the connection broke)
        and otherwise restarted from a new upload session. Returns the bytes of the upload that completed.
        `diff_id`, as (compression, diff_id), is checked too for a layer no one has verified yet: a
        mismatch fails the upload before its commit.
        """
        what = what or f"{self.registry}/{repo}: blob {desc.digest}"
        attempts = Attempts(self.options.retry)
        while True:
            try:
                if location is None:
                    location = self._start_upload(repo, what)
                if desc.size <= self.options.chunk_size:
                    return self._put_whole(repo, location, desc, opener, what, diff_id)
                return self._put_chunks(repo, location, desc, opener, what, diff_id)
            except TransientError as e:
                location = None
                if not attempts.failed(e.retry_after):
                    raise final_error(e, attempts.failures) from e
                if self.head_blob(repo, desc.digest, push_scope(repo)) is not None:
                    return desc.size  # the commit went through before the connection broke

    def _start_upload(self, repo: str, what: str) -> str:
        reply = self.transport.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=push_scope(repo), what=what,
                                       headers={"Content-Length": "0"})
        if reply.status != 202 or not reply.header("Location"):
            raise fail(reply, what, self.host)
        return self.transport.url(reply.header("Location"))

    def _put_whole(self, repo: str, location: str, desc: Descriptor, opener: Opener, what: str,
                   diff_id: Optional[tuple[str, str]] = None) -> int:
        with verified(opener, desc.digest, desc.size, what, diff_id) as stream:
            reply = self.transport.request(
                "PUT", _with_query(location, digest=desc.digest), scopes=push_scope(repo), what=what,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
                body=stream)
        self._check_committed(reply, desc, what)
        return desc.size

    def _put_chunks(self, repo: str, location: str, desc: Descriptor, opener: Opener, what: str,
                    diff_id: Optional[tuple[str, str]] = None) -> int:
        size, chunk = desc.size, self.options.chunk_size
        with verified(opener, desc.digest, desc.size, what, diff_id) as stream:
            start = 0
            while start < size:
                n = min(chunk, size - start)
                reply = self.transport.request(
                    "PATCH", location, scopes=push_scope(repo), what=what,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(n),
                             "Content-Range": f"{start}-{start + n - 1}"},
                    body=Window(stream, n))
                if reply.status != 202 or not reply.header("Location"):
                    raise fail(reply, f"{what}: PATCH bytes {start}-{start + n - 1}", self.host)
                location = self.transport.url(reply.header("Location"))
                start += n
            if stream.read(1):  # reaching the end checks digest and size before the upload is committed
                raise DigestMismatch(f"{what}: blob is larger than its declared size {size}")
        reply = self.transport.request("PUT", _with_query(location, digest=desc.digest), scopes=push_scope(repo),
                                       what=what, headers={"Content-Length": "0"}, retry=False)
        self._check_committed(reply, desc, what)
        return size

    def _check_committed(self, reply, desc: Descriptor, what: str) -> None:  # type: ignore[no-untyped-def]
        if reply.status not in (201, 204):
            raise fail(reply, what, self.host)
        said = reply.header("Docker-Content-Digest")
        if said.startswith("sha256:") and said != desc.digest:
            raise DigestMismatch(f"{what}: the registry stored it as {said}")


def _api_host(registry: str) -> str:
    return Reference(registry, "x").api_host


class _BlobStream(io.RawIOBase):
    """GET of one blob that reconnects with a Range request when the connection breaks mid-body."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, what: str) -> None:
        super().__init__()
        self._client = client
        self._repo = repo
        self._digest = digest
        self._what = what
        self._pos = 0
        self._resp: Optional[urllib3.BaseHTTPResponse] = None
        self._attempts = Attempts(client.options.retry)

    def readable(self) -> bool:
        return True

    def _open(self) -> urllib3.BaseHTTPResponse:
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        reply = self._client.transport.request("GET", f"/v2/{self._repo}/blobs/{self._digest}",
                                               scopes=pull_scope(self._repo), what=self._what,
                                               headers=headers, stream=True)
        if reply.raw is None:
            if reply.status == 404:
                raise NotFound(f"{self._what}: blob is missing from {self._client.host}/{self._repo}")
            raise fail(reply, self._what, self._client.host)
        resp = reply.raw
        if self._pos and reply.status == 200:  # no Range support: skip what was already read
            left = self._pos
            while left:
                data = resp.read(min(left, CHUNK), decode_content=False)
                if not data:
                    raise TransientError(f"{self._what}: blob ended early on re-read", network=True)
                left -= len(data)
                self._client.received += len(data)
        return resp

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while True:
            try:
                if self._resp is None:
                    self._resp = self._open()
                data = self._resp.read(len(buffer), decode_content=False)
            except TRANSIENT_EXCEPTIONS as e:
                self._drop()
                error = TransientError(f"{self._what}: connection broke at byte {self._pos} ({reason(e)})",
                                       network=True)
                if not self._attempts.failed():
                    raise final_error(error, self._attempts.failures) from e
                continue
            except TransientError as e:
                self._drop()
                if not self._attempts.failed(e.retry_after):
                    raise final_error(e, self._attempts.failures) from e
                continue
            n = len(data)
            buffer[:n] = data
            self._pos += n
            self._client.received += n
            return n

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.release_conn()
            self._resp.close()
            self._resp = None

    def close(self) -> None:
        try:
            self._drop()
        finally:
            super().close()


__all__ = ["FetchedManifest", "RegistryClient", "RegistryOptions", "RegistryUnreachable", "pull_scope", "push_scope"]

"""Tests of attaching an artifact as an OCI referrer, against an in-memory registry: with the
referrers API (OCI-Subject), with the referrers tag schema, a second attach, a hostile tag."""
from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Optional

import pytest

from lamina.model import OCI_INDEX, OCI_MANIFEST, Descriptor
from lamina.registry.client import RegistryClient
from lamina.registry.errors import RegistryError
from lamina.registry.referrers import (
    CYCLONEDX_JSON,
    EMPTY_MEDIA_TYPE,
    Artifact,
    artifact_manifest,
    attach,
    referrers_tag,
)
from lamina.registry.transport import RegistryOptions, Reply

HOST = "registry.test"
SUBJECT = Descriptor(OCI_MANIFEST, "sha256:" + "ab" * 32, 1234)
SBOM = Artifact(CYCLONEDX_JSON, b'{"bomFormat": "CycloneDX"}\n', "app.cdx.json",
                (("org.opencontainers.image.created", "2026-01-01T00:00:00Z"),))


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Registry:
    """Blobs, manifests by digest and tags of one repository; `referrers_api` answers manifest
    PUTs that have a subject with OCI-Subject, as distribution-spec 1.1 registries do."""

    host = HOST

    def __init__(self, referrers_api: bool) -> None:
        self.referrers_api = referrers_api
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.tags: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []

    def url(self, location: str) -> str:
        return location

    def request(self, method: str, path: str, *, headers: Optional[dict] = None, body: object = None,
                **_: object) -> Reply:
        parts = urllib.parse.urlsplit(path)
        self.requests.append((method, parts.path))
        kind, _, target = parts.path.rpartition("/")
        if kind.endswith("/blobs") and method == "HEAD":
            found = self.blobs.get(target)
            return Reply(200, {"Content-Length": str(len(found))}) if found is not None else Reply(404, {})
        if parts.path.endswith("/blobs/uploads/") and method == "POST":
            return Reply(202, {"Location": "/v2/team/app/blobs/uploads/u1"})
        if "/blobs/uploads/" in parts.path and method == "PUT":
            data = body.read() if hasattr(body, "read") else bytes(body or b"")  # type: ignore[union-attr]
            digest = urllib.parse.parse_qs(parts.query)["digest"][0]
            assert _sha(data) == digest
            self.blobs[digest] = data
            return Reply(201, {"Docker-Content-Digest": digest})
        if kind.endswith("/manifests") and method == "PUT":
            data = bytes(body)  # type: ignore[arg-type]
            digest = _sha(data)
            self.manifests[digest] = ((headers or {})["Content-Type"], data)
            if not target.startswith("sha256:"):
                self.tags[target] = digest
            subject = json.loads(data).get("subject")
            said = {"OCI-Subject": subject["digest"]} if subject and self.referrers_api else {}
            return Reply(201, {"Docker-Content-Digest": digest, **said})
        if kind.endswith("/manifests") and method == "GET":
            digest = self.tags.get(target, target)
            if digest in self.manifests:
                media_type, data = self.manifests[digest]
                return Reply(200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, data)
            return Reply(404, {}, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
        if parts.path.endswith("/tags/list"):
            return Reply(200, {}, json.dumps({"tags": sorted(self.tags)}).encode())
        raise AssertionError(f"unexpected {method} {path}")


def _client(registry: _Registry) -> RegistryClient:
    return RegistryClient(HOST, RegistryOptions(), registry)  # type: ignore[arg-type]


def test_the_artifact_manifest_names_its_subject_type_and_document_deterministically() -> None:
    manifest, blob = artifact_manifest(SBOM, SUBJECT)
    doc = json.loads(manifest)
    assert doc["mediaType"] == OCI_MANIFEST and doc["artifactType"] == CYCLONEDX_JSON
    assert doc["config"] == {"mediaType": EMPTY_MEDIA_TYPE, "digest": _sha(b"{}"), "size": 2}
    assert doc["subject"] == {"mediaType": OCI_MANIFEST, "digest": SUBJECT.digest, "size": 1234}
    assert doc["layers"] == [{"mediaType": CYCLONEDX_JSON, "digest": _sha(SBOM.data), "size": len(SBOM.data),
                              "annotations": {"org.opencontainers.image.title": "app.cdx.json"}}]
    assert doc["annotations"] == {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    assert blob.digest == _sha(SBOM.data)
    assert artifact_manifest(SBOM, SUBJECT)[0] == manifest  # same inputs, same bytes


def test_referrers_tag_is_the_spec_s_algorithm_dash_reference() -> None:
    assert referrers_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32
    assert referrers_tag("sha512:" + "c" * 128) == "sha512-" + "c" * 64  # the encoded part cut to 64
    assert referrers_tag("a+b:xyz") == "a-b-xyz"  # what a tag cannot hold becomes "-"


def test_a_registry_with_the_referrers_api_gets_no_tag() -> None:
    registry = _Registry(referrers_api=True)
    attached = attach(_client(registry), "team/app", SUBJECT, SBOM)
    assert attached.listed_by == "referrers API"
    assert registry.tags == {}  # the artifact is stored by digest only
    assert registry.manifests[attached.digest][0] == OCI_MANIFEST
    assert registry.blobs[_sha(SBOM.data)] == SBOM.data and registry.blobs[_sha(b"{}")] == b"{}"


def test_without_the_api_the_referrers_tag_lists_the_artifact_once() -> None:
    registry = _Registry(referrers_api=False)
    client = _client(registry)
    attached = attach(client, "team/app", SUBJECT, SBOM)
    tag = "sha256-" + "ab" * 32
    assert attached.listed_by == f"referrers tag {tag}"
    media_type, data = registry.manifests[registry.tags[tag]]
    index = json.loads(data)
    assert media_type == OCI_INDEX and index["mediaType"] == OCI_INDEX
    manifest = registry.manifests[attached.digest][1]
    assert index["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": attached.digest, "size": len(manifest),
                                   "artifactType": CYCLONEDX_JSON,
                                   "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}]
    before = registry.tags[tag]
    again = attach(client, "team/app", SUBJECT, SBOM)
    assert again.digest == attached.digest and registry.tags[tag] == before  # listed already: not rewritten
    assert sum(1 for m, p in registry.requests if m == "PUT" and p.endswith(f"/manifests/{tag}")) == 1


def test_a_referrers_tag_listing_another_artifact_keeps_it() -> None:
    registry = _Registry(referrers_api=False)
    client = _client(registry)
    other = Artifact("application/vnd.dev.cosign.artifact.sig.v1+json", b"sig", "sig")
    first = attach(client, "team/app", SUBJECT, other)
    second = attach(client, "team/app", SUBJECT, SBOM)
    index = json.loads(registry.manifests[registry.tags["sha256-" + "ab" * 32]][1])
    assert [m["digest"] for m in index["manifests"]] == [first.digest, second.digest]


def test_a_referrers_tag_that_holds_no_index_is_refused_and_left_alone() -> None:
    registry = _Registry(referrers_api=False)
    tag = "sha256-" + "ab" * 32
    squatter = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    registry.manifests[_sha(squatter)] = (OCI_MANIFEST, squatter)
    registry.tags[tag] = _sha(squatter)
    with pytest.raises(RegistryError, match=f"{tag}: the referrers tag holds a .* not an OCI image index"):
        attach(_client(registry), "team/app", SUBJECT, SBOM)
    assert registry.tags[tag] == _sha(squatter)

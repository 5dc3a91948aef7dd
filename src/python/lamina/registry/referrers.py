"""Attach an artifact (an image's SBOM) to a pushed manifest as an OCI referrer (image-spec 1.1,
distribution-spec 1.1), so that tools which discover referrers (`oras discover`, Trivy's
`--sbom-sources oci`, `cosign tree`) find it from the image's digest.

The artifact is an image manifest with an `artifactType`, the empty config
(`application/vnd.oci.empty.v1+json`, `{}`), one layer holding the document, and a `subject`: the
image manifest's descriptor. It is stored by digest, never under a tag of its own.

How a registry lists it:
- a registry with the referrers API (`GET /v2/<repo>/referrers/<digest>`) says so by answering the
  manifest PUT with an `OCI-Subject` header; it lists the artifact itself;
- any other (Docker's distribution 2.x, for one) gets the referrers tag schema: lamina reads the
  image index tagged `sha256-<hex of the subject digest>` (none yet: an empty index), adds the
  artifact's descriptor (with its artifactType and annotations) unless it is listed already, and
  writes the index back under that tag. Two pushers updating the same tag at once can lose one
  entry, as the spec says of this fallback.

Everything here is deterministic: the same image and document give the same artifact digest, so a
second publish adds nothing.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, replace
from typing import Callable, Optional

from lamina.errors import shown
from lamina.model import OCI_INDEX, OCI_MANIFEST, Descriptor
from lamina.registry.client import RegistryClient, push_scope
from lamina.registry.errors import NotFound, RegistryError
from lamina.registry.reference import Reference

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
ANN_TITLE = "org.opencontainers.image.title"
ANN_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Artifact:
    """A document to attach: its type (also its layer's media type), its bytes, the file name it is
    shown under (`org.opencontainers.image.title`), and the artifact manifest's annotations."""

    artifact_type: str
    data: bytes
    title: str
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def what(self) -> str:
        return "SBOM" if self.artifact_type == CYCLONEDX_JSON else self.artifact_type


@dataclass(frozen=True)
class Attached:
    """An artifact stored in `repository` as a referrer of `subject`, and how the registry lists it."""

    repository: str
    subject: str
    digest: str
    artifact: Artifact
    listed_by: str  # "referrers API" or "referrers tag sha256-..."

    def summary(self, registry: str) -> str:
        return (f"attached {self.artifact.what} {self.artifact.title} to {registry}/{self.repository}@{self.subject}: "
                f"artifact {self.digest}, listed by the {self.listed_by}")


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def artifact_manifest(artifact: Artifact, subject: Descriptor) -> tuple[bytes, Descriptor]:
    """The artifact's manifest (canonical JSON) and its document's blob descriptor."""
    blob = replace(Descriptor.of(artifact.artifact_type, artifact.data), annotations=((ANN_TITLE, artifact.title),))
    doc: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact.artifact_type,
        "config": Descriptor.of(EMPTY_MEDIA_TYPE, EMPTY_DATA).to_json(),
        "layers": [blob.to_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
    }
    if artifact.annotations:
        doc["annotations"] = dict(artifact.annotations)
    return _canonical(doc), blob


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for `digest` (distribution-spec 1.1): `<alg>-<ref>`, the
    algorithm cut to 32 characters and the encoded part to 64, any character a tag cannot hold
    replaced by `-`."""
    alg, _, encoded = digest.partition(":")
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{alg[:32]}-{encoded[:64]}")


def _listed_index(client: RegistryClient, ref: Reference) -> dict:
    """The image index the referrers tag names, or an empty one; refuses a tag that holds anything else."""
    try:
        fetched = client.get_manifest(ref)
    except NotFound:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    what = f"{ref}: the referrers tag"
    try:
        doc = json.loads(fetched.data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if (not isinstance(doc, dict) or fetched.media_type != OCI_INDEX or doc.get("mediaType", OCI_INDEX) != OCI_INDEX
            or not isinstance(doc.get("manifests"), list)
            or not all(isinstance(m, dict) and isinstance(m.get("digest"), str) for m in doc["manifests"])):
        raise RegistryError(f"{what} holds a {shown(fetched.media_type) or 'document'} that is not an OCI image "
                            "index of referrers; lamina does not overwrite it: delete that tag, or push without "
                            "the SBOM (`sbom=False` on the target, no --sbom)")
    return doc


def attach(client: RegistryClient, repo: str, subject: Descriptor, artifact: Artifact,
           push_blob: Optional[Callable[[Descriptor, bytes], None]] = None) -> Attached:
    """Store `artifact` in `repo` as a referrer of the manifest `subject` (already pushed, by
    digest): its blobs, its manifest by digest, then (when the registry has no referrers API) the
    referrers tag's index."""
    manifest, blob = artifact_manifest(artifact, subject)
    empty = Descriptor.of(EMPTY_MEDIA_TYPE, EMPTY_DATA)
    for desc, data in ((empty, EMPTY_DATA), (blob, artifact.data)):
        if push_blob is not None:
            push_blob(desc, data)
        elif client.head_blob(repo, desc.digest, push_scope(repo)) is None:
            client.upload_blob(repo, desc, lambda d=data: io.BytesIO(d),  # type: ignore[misc]
                               what=f"{client.registry}/{repo}: {artifact.what} blob {desc.digest}")
    digest = Descriptor.of(OCI_MANIFEST, manifest).digest
    stored, said = client.put_manifest_subject(Reference(client.registry, repo, digest=digest), OCI_MANIFEST,
                                               manifest)
    if said == subject.digest:
        return Attached(repo, subject.digest, stored, artifact, "referrers API")
    tag = referrers_tag(subject.digest)
    ref = Reference(client.registry, repo, tag=tag)
    index = _listed_index(client, ref)
    if not any(m.get("digest") == stored for m in index["manifests"]):
        entry: dict = {"mediaType": OCI_MANIFEST, "digest": stored, "size": len(manifest),
                       "artifactType": artifact.artifact_type}
        if artifact.annotations:
            entry["annotations"] = dict(artifact.annotations)
        index["manifests"].append(entry)
        client.put_manifest(ref, OCI_INDEX, _canonical(index))
    return Attached(repo, subject.digest, stored, artifact, f"referrers tag {tag}")

"""Push any Image (read or composed) to registry tags: HEAD each blob, mount what another repository has,
upload the rest, manifest last."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Sequence

from lamina.blobs import Opener
from lamina.errors import InvalidSource
from lamina.image import Image
from lamina.index import ImageIndex
from lamina.registry.locations import BlobLocations
from lamina.model import ANN_SOURCE, OCI_MANIFEST, Descriptor, is_nondistributable
from lamina.registry.client import RegistryClient, push_scope
from lamina.registry.errors import BadReference
from lamina.registry.reference import Reference, is_registry_ref, parse_reference
from lamina.registry.referrers import Artifact, Attached, attach
from lamina.registry.transport import RegistryOptions


@dataclass(frozen=True)
class BlobOutcome:
    digest: str
    size: int
    how: str  # "present" (HEAD found it), "mounted" (from `source_repo`) or "uploaded"
    source_repo: str = ""
    layer: bool = True  # False for the config


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


@dataclass(frozen=True)
class PushResult:
    """One tag pushed: the manifest digest and what happened to each blob of its repository."""

    target: Reference
    digest: str
    blobs: tuple[BlobOutcome, ...]
    attached: tuple["Attached", ...] = ()  # artifacts (the SBOM) stored as referrers of the manifest
    platforms: int = 0  # for a multi-platform image's index: how many manifests it names

    @property
    def uploaded_bytes(self) -> int:
        return sum(b.size for b in self.blobs if b.how == "uploaded")

    @property
    def skipped_bytes(self) -> int:
        return sum(b.size for b in self.blobs if b.how != "uploaded")

    @property
    def mounted(self) -> int:
        return sum(1 for b in self.blobs if b.how == "mounted")

    def layers(self, how: str) -> tuple[int, int]:
        """(count, bytes) of the layers that were `how`."""
        picked = [b for b in self.blobs if b.layer and b.how == how]
        return len(picked), sum(b.size for b in picked)

    def summary(self) -> str:
        parts = []
        for how, words in (("uploaded", "uploaded"), ("mounted", "mounted"), ("present", "already there")):
            count, size = self.layers(how)
            parts.append(f"{count} {words} ({_mib(size)})")
        what = f" (index of {self.platforms} platforms)" if self.platforms else ""
        return (f"pushed {self.target} {self.digest}{what} \u2014 layers {', '.join(parts)}; blobs in all: "
                f"uploaded {self.uploaded_bytes} bytes, skipped {self.skipped_bytes} bytes ({self.mounted} mounted)")


def _source_repo(text: str, registry: str) -> Optional[str]:
    """The repository of a `docker://` reference on `registry`, else None."""
    if not is_registry_ref(text):
        return None
    try:
        ref = parse_reference(text)
    except BadReference:
        return None
    return ref.repository if ref.registry == registry else None


@dataclass(frozen=True)
class _Blob:
    descriptor: Descriptor
    opener: Optional[Opener]
    mount_from: tuple[str, ...]  # repositories of the same registry that may hold it
    diff_id: Optional[tuple[str, str]] = None  # (compression, diff_id) to check as it is uploaded
    layer: bool = True


def _bytes_opener(data: bytes) -> Opener:
    return lambda: io.BytesIO(data)  # type: ignore[return-value]


def _blobs(image: Image, registry: str) -> list[_Blob]:
    whole = _source_repo(image.source, registry)
    out: list[_Blob] = []
    seen: set[str] = set()
    for layer in image.layers:
        d = layer.descriptor
        if d.digest in seen or is_nondistributable(d.media_type):
            # a foreign layer is named in the manifest (with its urls) and never sent, as Docker does
            continue
        seen.add(d.digest)
        # Where the layer came from: as the image knows it, as an image read back from disk
        # records it in the layer's annotation, or where the engine says its image is kept.
        named = (layer.source, dict(d.annotations).get(ANN_SOURCE, ""), *layer.copies)
        repos = [r for r in (*(_source_repo(n, registry) for n in named), whole) if r]
        # A layer no one has verified (read from a source, not a bundle) is checked against its
        # diff_id too as it is sent, as a writer checks it.
        check = None if layer.verified_by else (layer.compression, layer.diff_id)
        out.append(_Blob(d, layer.opener_or_file(), tuple(dict.fromkeys(repos)), check))
    config = image.config_descriptor
    if config.digest not in seen:
        out.append(_Blob(config, _bytes_opener(image.config_bytes), (whole,) if whole else (), layer=False))
    return out


def _push_blob(client: RegistryClient, repo: str, blob: _Blob, pushed_repos: Sequence[str], where: str,
               remembered: Sequence[str] = ()) -> BlobOutcome:
    d = blob.descriptor
    candidates = [r for r in dict.fromkeys([*blob.mount_from, *pushed_repos, *remembered]) if r != repo]
    if client.head_blob(repo, d.digest, push_scope(repo)) is not None:
        return BlobOutcome(d.digest, d.size, "present", layer=blob.layer)
    location: Optional[str] = None
    for from_repo in candidates:
        location = client.mount_blob(repo, d.digest, from_repo)
        if location is None:
            return BlobOutcome(d.digest, d.size, "mounted", from_repo, blob.layer)
    if blob.opener is None:
        raise InvalidSource(
            f"{where}: blob {d.digest} is not in {client.registry}/{repo} and the source has no bytes for it "
            "(a bundle holds only its selected layers); push an image that has every layer, or push its "
            "source to this registry first"
        )
    client.upload_blob(repo, d, blob.opener, location, f"{client.registry}/{repo}: blob {d.digest}", blob.diff_id)
    return BlobOutcome(d.digest, d.size, "uploaded", layer=blob.layer)


def parse_targets(texts: Sequence[str]) -> tuple[Reference, ...]:
    """`HOST[:PORT]/REPO:TAG` push targets (a `docker://` prefix is allowed); each needs a tag."""
    out = []
    for text in texts:
        if "@" in text:
            raise BadReference(f"{text!r}: push to a tag (HOST/REPO:TAG); the digest follows from the image")
        out.append(parse_reference(text, require_tag=True))
    return tuple(out)


def push(image: Image, targets: Sequence[Reference], options: RegistryOptions,
         clients: Optional[dict[str, RegistryClient]] = None,
         locations: Optional[BlobLocations] = None, referrers: Sequence[Artifact] = ()) -> tuple[PushResult, ...]:
    """Push `image` to every target. All blobs of every repository go first, then the manifests, one per tag,
    so a failure part-way never leaves a tag naming blobs the registry lacks.

    `referrers` (the SBOM) are attached to the manifest in each repository before any tag is
    written: the manifest is stored by digest first, then each artifact (lamina.registry.referrers),
    then the tags; a failure there too leaves no tag.
    """
    clients = clients if clients is not None else {}
    manifest = image.manifest_bytes
    outcomes: dict[tuple[str, str], tuple[BlobOutcome, ...]] = {}
    pushed: dict[str, list[str]] = {}
    for target in targets:
        key = (target.registry, target.repository)
        if key in outcomes:
            continue
        client = clients.setdefault(target.registry, RegistryClient(target.registry, options))
        done = pushed.setdefault(target.registry, [])
        blobs = _blobs(image, target.registry)
        outcomes[key] = tuple(
            _push_blob(client, target.repository, blob, done, f"{image.source} -> {target}",
                       locations.repos(target.registry, blob.descriptor.digest) if locations else ())
            for blob in blobs
        )
        done.append(target.repository)
        if locations:
            locations.record(target.registry, target.repository, (b.descriptor.digest for b in blobs))
    attached: dict[tuple[str, str], tuple[Attached, ...]] = {}
    if referrers:
        subject = Descriptor.of(OCI_MANIFEST, manifest)
        for target in targets:
            key = (target.registry, target.repository)
            if key in attached:
                continue
            client = clients[target.registry]
            client.put_manifest(target.with_digest(subject.digest), OCI_MANIFEST, manifest)
            attached[key] = tuple(attach(client, target.repository, subject, a) for a in referrers)
    results = []
    first: set[tuple[str, str]] = set()
    for target in targets:
        key = (target.registry, target.repository)
        if target.digest is not None and key in attached:  # stored by digest above already
            digest = target.digest
        else:
            digest = clients[target.registry].put_manifest(target, OCI_MANIFEST, manifest)
        blobs = outcomes[key] if key not in first else tuple(
            BlobOutcome(b.digest, b.size, "present", layer=b.layer) for b in outcomes[key])
        results.append(PushResult(target, digest, blobs, attached.get(key, ()) if key not in first else ()))
        first.add(key)
    return tuple(results)


def push_index(index: "ImageIndex", targets: Sequence[Reference], options: RegistryOptions,
               clients: Optional[dict[str, RegistryClient]] = None, locations: Optional[BlobLocations] = None,
               referrers: Sequence[Sequence[Artifact]] = ()) -> tuple[PushResult, ...]:
    """Push a multi-platform image: every platform's blobs and manifest (by digest, with its
    `referrers[i]` attached), then the index under each tag, last: a failure before that leaves
    no tag."""
    from lamina.model import OCI_INDEX

    clients = clients if clients is not None else {}
    repos = list(dict.fromkeys((t.registry, t.repository) for t in targets))
    per_image: list[dict[tuple[str, str], PushResult]] = []
    for i, image in enumerate(index.images):
        digest = image.manifest_descriptor.digest
        by_digest = [Reference(registry, repo, digest=digest) for registry, repo in repos]
        pushed = push(image, by_digest, options, clients, locations, referrers[i] if referrers else ())
        per_image.append({(r.target.registry, r.target.repository): r for r in pushed})
    data = index.index_bytes
    results = []
    first: set[tuple[str, str]] = set()
    for target in targets:
        key = (target.registry, target.repository)
        digest = clients[target.registry].put_manifest(target, OCI_INDEX, data)
        blobs: dict[str, BlobOutcome] = {}
        attached: list[Attached] = []
        for pushed in per_image:
            for b in pushed[key].blobs:
                blobs.setdefault(b.digest, b if key not in first else BlobOutcome(b.digest, b.size, "present",
                                                                                   layer=b.layer))
            attached.extend(pushed[key].attached if key not in first else ())
        results.append(PushResult(target, digest, tuple(blobs.values()), tuple(attached), len(index.images)))
        first.add(key)
    return tuple(results)

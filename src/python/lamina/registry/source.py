"""Images in a registry as lamina sources: manifest and config fetched up front, each layer only when read."""
from __future__ import annotations

import io
import sys
from typing import Optional

from lamina.blobs import Opener
from lamina.errors import InvalidSource, shown
from lamina.formats.oci_layout import read_manifest_image
from lamina.image import Image
from lamina.model import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Platform, expect_dict, parse_json
from lamina.registry.client import FetchedManifest, RegistryClient
from lamina.registry.errors import UnpinnedReference
from lamina.registry.reference import Reference, parse_reference
from lamina.registry.transport import RegistryOptions

_MAX_NESTING = 4


def _warn(options: RegistryOptions, message: str) -> None:
    if options.warn is not None:
        options.warn(message)
    else:
        print(f"lamina: warning: {message}", file=sys.stderr)


def _media_type(fetched: FetchedManifest, doc: dict, where: str) -> str:
    declared = doc.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else fetched.media_type
    if media_type not in MANIFEST_TYPES | INDEX_TYPES:
        if doc.get("schemaVersion") == 1 or "prettyjws" in media_type or "manifest.v1" in media_type:
            raise InvalidSource(f"{where}: Docker schema 1 manifests are not supported; re-push the image "
                                "with a current Docker or skopeo to get a v2/OCI manifest")
        raise InvalidSource(f"{where}: unknown manifest media type {media_type!r}")
    return media_type


def pick_platform(index: dict, wanted: Platform, where: str) -> Descriptor:
    """The entry of an image index built for `wanted`, by Platform.best (a request without a
    variant takes any, preferring the default one: linux/arm picks arm/v7)."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidSource(f"{where}: index has no manifests list")
    images = [e for e in entries if isinstance(e.get("platform"), dict)
              and (e["platform"].get("os"), e["platform"].get("architecture")) != ("unknown", "unknown")]
    if not images and len(entries) == 1:
        return Descriptor.from_json(entries[0], f"{where}: index")
    exact = [images[i] for i in wanted.best([Platform.of_config(e["platform"]) for e in images])]
    if len(exact) >= 1 and len({str(e.get("digest")) for e in exact}) == 1:
        return Descriptor.from_json(exact[0], f"{where}: index")
    have = ", ".join(sorted({shown(str(Platform.of_config(e["platform"]))) for e in images})) or "none"
    if exact:
        raise InvalidSource(f"{where}: several images match platform {wanted} ({have}); name the variant, "
                            f"e.g. --platform {wanted}/v7")
    raise InvalidSource(f"{where}: no image for platform {wanted} (it has {have}); pass --platform")


class _RegistryBlobs:
    """The BlobSource protocol over one repository: fetched documents from memory, other blobs streamed on open."""

    def __init__(self, client: RegistryClient, ref: Reference, docs: dict[str, bytes]) -> None:
        self.where = ref.url
        self._client = client
        self._repo = ref.repository
        self._docs = docs

    def has_file(self, name: str) -> bool:
        return False

    def read_file(self, name: str, what: str) -> bytes:
        raise InvalidSource(f"{self.where}: a registry has no file {name!r}")

    def blob_opener(self, digest: str) -> Optional[Opener]:
        if digest in self._docs:
            data = self._docs[digest]
            return lambda: io.BytesIO(data)  # type: ignore[return-value]
        client, repo, what = self._client, self._repo, f"{self.where}: blob {digest}"
        return lambda: client.open_blob(repo, digest, what)

    def blob_file(self, digest: str) -> Optional[str]:
        return None

    def blob_size(self, digest: str) -> Optional[int]:
        return None


def resolve_manifest(client: RegistryClient, ref: Reference, platform: Optional[Platform]) -> tuple[FetchedManifest, str, str]:
    """(the image manifest, its media type, the digest `ref` resolved to at top level, index or not)."""
    fetched = client.get_manifest(ref)
    top = fetched.digest
    where = ref.url
    for _ in range(_MAX_NESTING):
        doc = expect_dict(parse_json(fetched.data, f"{where}: manifest"), f"{where}: manifest")
        media_type = _media_type(fetched, doc, where)
        if media_type in MANIFEST_TYPES:
            return fetched, media_type, top
        chosen = pick_platform(doc, platform or Platform.host(), where)
        fetched = client.get_manifest(ref.with_digest(chosen.digest))
    raise InvalidSource(f"{where}: image indexes nested more than {_MAX_NESTING} deep")


def index_platforms(client: RegistryClient, ref: Reference) -> tuple[Platform, ...]:
    """The platforms of the index `ref` names, in its order (attestations left out); () for an image."""
    fetched = client.get_manifest(ref)
    doc = expect_dict(parse_json(fetched.data, f"{ref.url}: manifest"), f"{ref.url}: manifest")
    if _media_type(fetched, doc, ref.url) in MANIFEST_TYPES:
        return ()
    entries = doc.get("manifests") if isinstance(doc.get("manifests"), list) else []
    found = tuple(Platform.of_config(e["platform"]) for e in entries
                  if isinstance(e, dict) and isinstance(e.get("platform"), dict)
                  and (e["platform"].get("os"), e["platform"].get("architecture")) != ("unknown", "unknown"))
    return found if len(found) > 1 else ()  # one image and its attestation (buildx's default): one image


def resolve(text: str, options: RegistryOptions, client: Optional[RegistryClient] = None) -> Reference:
    """`text` with the digest of what it names now added, its tag kept (`HOST/REPO:TAG@sha256:...`).

    One manifest GET: the digest is that of the document the tag names, the index's for a
    multi-platform image (the platform is picked when the image is read, so one lookup serves every
    platform). A tag is warned about (UnpinnedReference with `require_pinned`), as when it is read.
    """
    ref = parse_reference(text)
    client = client or RegistryClient(ref.registry, options)
    fetched = client.get_manifest(ref)
    doc = expect_dict(parse_json(fetched.data, f"{ref.url}: manifest"), f"{ref.url}: manifest")
    _media_type(fetched, doc, ref.url)  # a schema 1 or unknown document is refused now, not when read
    pinned = Reference(ref.registry, ref.repository, ref.tag, fetched.digest)
    if not ref.pinned:
        _tag_named(text, ref, fetched.digest, options)
    return pinned


def _tag_named(text: str, ref: Reference, digest: str, options: RegistryOptions) -> None:
    if options.require_pinned:
        raise UnpinnedReference(f"{text}: a tag can move and --require-pinned is set; "
                                f"pin it as {ref.with_digest(digest).url}")
    _warn(options, f"{text} is a tag, resolved now to {digest}; pin it as {ref.with_digest(digest).url}")


def open_registry_image(text: str, options: RegistryOptions, name: Optional[str] = None,
                        platform: Optional[Platform] = None, client: Optional[RegistryClient] = None) -> Image:
    """The image `docker://HOST/REPO@sha256:...` (or `:TAG`) names; layers are fetched only when opened.

    A tag is resolved and a warning names the digest to pin (UnpinnedReference with `require_pinned`).
    """
    ref = parse_reference(text)
    client = client or RegistryClient(ref.registry, options)
    fetched, media_type, top = resolve_manifest(client, ref, platform)
    if not ref.pinned:
        _tag_named(text, ref, top, options)
    desc = Descriptor(media_type, fetched.digest, len(fetched.data))
    blobs = _RegistryBlobs(client, ref, {fetched.digest: fetched.data})
    return read_manifest_image(blobs, desc, ref.url, name or text, (ref.tag,) if ref.tag else ())


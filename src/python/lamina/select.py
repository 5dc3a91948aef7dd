"""Layer selectors: index, slice, digest/diff_id prefix, created_by=REGEX and path=PATH."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar, Union

from lamina.errors import SelectorError
from lamina.image import Image, Layer
from lamina.layertar import entries, normalize

T = TypeVar("T")

_INDEX = re.compile(r"^-?\d+$")
_SLICE = re.compile(r"^(-?\d*):(-?\d*)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{1,64}$")

SELECTOR_HELP = (
    "an index (0 = base, -1 = top), a slice ('2:', '1:3', ':'), 'sha256:<digest or diff_id prefix>', "
    "'created_by=<regex>' or 'path=/some/file'"
)


@dataclass(frozen=True)
class Selector:
    kind: str  # index | slice | digest | created_by | path
    value: str

    def __str__(self) -> str:
        if self.kind in ("created_by", "path"):
            return f"{self.kind}={self.value}"
        return self.value


def parse_selector(raw: Union[str, int]) -> Selector:
    if isinstance(raw, bool):
        raise SelectorError(f"layer selector {raw!r} is not valid; use {SELECTOR_HELP}")
    if isinstance(raw, int):
        return Selector("index", str(raw))
    text = raw.strip()
    if _INDEX.match(text):
        return Selector("index", str(int(text)))
    if _SLICE.match(text):
        return Selector("slice", text)
    if text.startswith("sha256:"):
        if not _DIGEST.match(text):
            raise SelectorError(f"layer selector {raw!r}: a digest prefix is sha256: and 1-64 lowercase hex digits")
        return Selector("digest", text)
    if text.startswith("created_by="):
        pattern = text[len("created_by="):]
        try:
            re.compile(pattern)
        except re.error as e:
            raise SelectorError(f"layer selector {raw!r}: bad regular expression ({e})") from e
        return Selector("created_by", pattern)
    if text.startswith("path="):
        path = text[len("path="):]
        if not path.strip("/"):
            raise SelectorError(f"layer selector {raw!r}: path= needs a file path, e.g. path=/usr/bin/curl")
        return Selector("path", path)
    raise SelectorError(f"layer selector {raw!r} is not valid; use {SELECTOR_HELP}")


def describe(layer: Layer) -> str:
    created = layer.created_by.replace("\n", " ")
    if len(created) > 60:
        created = created[:57] + "..."
    return f"[{layer.index}] {layer.descriptor.digest[:19]} {created}".rstrip()


def _candidates(image: Image) -> str:
    return "; ".join(describe(layer) for layer in image.layers) or "(the image has no layers)"


def by_position(selector: Selector, items: Sequence[T]) -> Optional[tuple[T, ...]]:
    """What an index or slice selector picks from `items` (a stack's layers, or their diff_ids),
    base first: empty when it picks nothing there; None for a selector of another kind."""
    if selector.kind == "index":
        i = int(selector.value)
        return (items[i],) if -len(items) <= i < len(items) else ()
    if selector.kind == "slice":
        start_text, stop_text = selector.value.split(":")
        return tuple(items[slice(int(start_text) if start_text else None, int(stop_text) if stop_text else None)])
    return None


def select(image: Image, selector: Selector) -> tuple[Layer, ...]:
    """The layers the selector picks, base first; SelectorError listing candidates otherwise."""
    layers = image.layers
    n = len(layers)
    where = f"{image.source}: layer selector {selector}"
    picked = by_position(selector, layers)
    if picked == () and selector.kind == "index":
        raise SelectorError(f"{where}: index out of range, the image has {n} layers: {_candidates(image)}")
    if picked == ():
        raise SelectorError(f"{where}: slice selects no layer, the image has {n} layers: {_candidates(image)}")
    if picked is not None:
        return picked
    if selector.kind == "digest":
        matches = [l for l in layers if l.descriptor.digest.startswith(selector.value) or l.diff_id.startswith(selector.value)]
    elif selector.kind == "created_by":
        pattern = re.compile(selector.value)
        if n and not any(l.history for l in layers):
            raise SelectorError(f"{where}: the image's history does not map onto its layers, so created_by cannot be used")
        matches = [l for l in layers if pattern.search(l.created_by)]
    else:
        wanted = normalize(selector.value, where)
        matches = [l for l in layers if _adds(l, wanted)]
    if not matches:
        raise SelectorError(f"{where}: matches no layer; candidates: {_candidates(image)}")
    if len(matches) > 1:
        listed = "; ".join(describe(l) for l in matches)
        raise SelectorError(f"{where}: matches {len(matches)} layers ({listed}); make it more specific or use an index")
    return (matches[0],)


def _adds(layer: Layer, path: str) -> bool:
    """Whether the layer holds `path` (not as a directory); reads the whole layer, so it is verified."""
    found = False
    for e in entries(layer):
        found = found or (e.path == path and not e.is_whiteout and e.kind != "dir")
    return found

"""The lamina command line: the only place that reads argv and the environment."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from lamina.errors import LaminaError
from lamina.model import Platform, parse_json


def _platform(text: Optional[str]) -> Optional[Platform]:
    if not text:
        return None
    try:
        return Platform.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def cmd_layers(args: argparse.Namespace) -> int:
    from lamina.layerfs import entries
    from lamina.sources import open_image

    image = open_image(args.source, platform=_platform(args.platform))
    rows = []
    for layer in image.layers:
        row = {
            "index": layer.index,
            "digest": layer.descriptor.digest,
            "diff_id": layer.diff_id,
            "size": layer.descriptor.size,
            "media_type": layer.descriptor.media_type,
            "created_by": layer.created_by,
        }
        if args.files and layer.opener is not None:
            row["files"] = [
                e.path + ("/" if e.kind == "dir" else "") + (f" -> {e.linkname}" if e.linkname else "")
                for e in entries(layer)
            ]
        rows.append(row)
    if args.json:
        json.dump({"source": args.source, "platform": str(image.platform), "layers": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{args.source}  platform {image.platform}  {len(rows)} layers")
    for row in rows:
        created = row["created_by"].replace("\n", " ")
        print(f"{row['index']:>3}  {row['digest'][:19]}  diff_id {row['diff_id'][:19]}  "
              f"{row['size']:>12}  {created[:80]}")
        for f in row.get("files", []):
            print(f"       {f}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from lamina.extract import extract
    from lamina.select import parse_selector, select
    from lamina.sources import open_image

    image = open_image(args.source, name=args.name, platform=_platform(args.platform))
    selector = parse_selector(args.layer)
    layers = select(image, selector)
    selection = extract(image, layers, args.out, str(selector))
    json.dump(selection.to_json(image), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from lamina.build import build
    from lamina.spec import parse_spec

    with open(args.spec, "rb") as f:
        data = parse_json(f.read(), args.spec)
    if args.format and isinstance(data, dict):  # parse_spec reports a spec that is not an object
        data["format"] = args.format
    image = build(parse_spec(data), args.out)
    d = image.manifest_descriptor
    print(json.dumps({"manifest": d.digest, "config": image.config_descriptor.digest,
                      "layers": len(image.layers), "out": args.out}, sort_keys=True))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from lamina.sources import open_image
    from lamina.validate import validate

    report = validate(open_image(args.source, platform=_platform(args.platform)))
    print(f"{args.source}: ok, {report.layers} layers, {report.bytes} bytes verified")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamina",
        description="Compose container images from layers of existing images, keeping every layer's digest.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    src_help = ("image source: docker-archive:PATH[:TAG], oci:DIR[:REF], oci-archive:PATH[:REF], "
                "or a bare path (sniffed)")

    layers = sub.add_parser("layers", help="list an image's layers (index, digest, diff_id, size, created_by)")
    layers.add_argument("source", help=src_help)
    layers.add_argument("--files", action="store_true", help="also list each layer's entries (like tar -tf)")
    layers.add_argument("--json", action="store_true", help="print JSON")
    layers.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    layers.set_defaults(func=cmd_layers)

    ex = sub.add_parser("extract", help="write selected layers of an image, verified, as a sparse OCI layout")
    ex.add_argument("source", help=src_help)
    ex.add_argument("--layer", required=True, help="selector: index, slice, sha256:PREFIX, created_by=RE, path=P")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--name", help="how the source is recorded in the output (default: SOURCE)")
    ex.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    ex.set_defaults(func=cmd_extract)

    co = sub.add_parser("compose", help="compose an image from a JSON spec")
    co.add_argument("spec", help="path of the JSON spec (see README)")
    co.add_argument("--out", required=True, help="output path (a file, or a directory for --format oci)")
    co.add_argument("--format", choices=("docker-archive", "oci", "oci-archive"), help="overrides the spec's format")
    co.set_defaults(func=cmd_compose)

    va = sub.add_parser("validate", help="check every blob of an image against its digest, size and diff_id")
    va.add_argument("source", help=src_help)
    va.add_argument("--platform", help="os/arch[/variant]")
    va.set_defaults(func=cmd_validate)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LaminaError as e:
        print(f"lamina: error: {e}", file=sys.stderr)
        return 2
    except argparse.ArgumentTypeError as e:
        print(f"lamina: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"lamina: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The lamina command line: the only place that reads argv and the environment."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Optional, Sequence

from lamina.errors import InvalidSource, LaminaError, SpecError
from lamina.model import Platform, parse_json

if TYPE_CHECKING:
    from lamina.image import Image
    from lamina.progress import Progress
    from lamina.registry.client import RegistryClient
    from lamina.registry.transport import RegistryOptions
    from lamina.registry.referrers import Artifact
    from lamina.sbom import Inventory
    from lamina.index import IndexSpec
    from lamina.spec import Spec


def _platform(text: Optional[str]) -> Optional[Platform]:
    if not text:
        return None
    try:
        return Platform.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _warn(message: str) -> None:
    print(f"lamina: warning: {message}", file=sys.stderr)


def _registry(args: argparse.Namespace) -> "RegistryOptions":
    from lamina.registry.transport import RegistryOptions

    extra = {"read_timeout": args.timeout} if getattr(args, "timeout", None) else {}
    return RegistryOptions.from_environ(
        os.environ,
        insecure=tuple(getattr(args, "insecure", None) or ()),
        ca_bundle=getattr(args, "ca_bundle", None),
        require_pinned=bool(getattr(args, "require_pinned", False)),
        warn=_warn,
        **extra,
    )


def is_spec(source: str) -> bool:
    """Whether an image argument names a compose spec (a .json file) rather than an image source."""
    return source.endswith(".json") and os.path.isfile(source)


@contextmanager
def _engine_source(source: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(`source`, ()), or for `docker-daemon:NAME` (an image in the local engine, DOCKER_HOST) a
    `docker-archive:` of it, unpacked from the engine's export stream into a temporary directory
    removed on exit (nothing of it is kept, only what the command makes of it), and the registry
    manifests the engine says the image is at (its RepoDigests, as `docker://` references)."""
    with _engine_export(source) as (path, copies, _):
        yield path, copies


@contextmanager
def _engine_export(source: str, index_for: object = None) -> Iterator[tuple[str, tuple[str, ...], Mapping[str, object]]]:
    """_engine_source, and for an engine image what the layers `index_for` (a selector) picks
    hold, indexed as they streamed by (daemon.Exported.contents)."""
    if not source.startswith("docker-daemon:"):
        yield source, (), {}
        return
    import shutil
    import tempfile

    from lamina.daemon import connect, export_unpacked

    # LAMINA_TMPDIR: where (the Pants plugin sets its sandbox: it is removed with it, whatever happens)
    tmp = tempfile.mkdtemp(prefix="lamina-engine-", dir=os.environ.get("LAMINA_TMPDIR") or None)
    try:
        exported = export_unpacked(connect(os.environ), source[len("docker-daemon:"):], os.path.join(tmp, "image"),
                                   index_for)
        yield ("docker-archive:" + exported.path, tuple(f"docker://{d}" for d in exported.repo_digests),
               exported.contents)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _image(args: argparse.Namespace, options: Optional["RegistryOptions"] = None,
           inventory: Optional["Inventory"] = None) -> Iterator["Image"]:
    """The image `args.source` names: a source (archive, layout, registry), or a compose spec,
    composed lazily: its layers are read from their sources by whatever consumes the image (a
    push, a load), never written out first. Only a spec's files layer, if any, is packed into a
    temporary directory. `inventory` (a spec's only) receives its layers' packages, for the SBOM."""
    from lamina.sources import open_image

    options = options or _registry(args)
    if not is_spec(args.source):
        from lamina.image import with_copies

        with _engine_source(args.source) as (source, copies):
            yield with_copies(open_image(source, name=args.source, platform=_platform(args.platform), registry=options),
                              copies)
        return
    import tempfile

    from lamina.build import composed
    from lamina.spec import parse_spec

    with open(args.source, "rb") as f:
        data = parse_json(f.read(), args.source)
    from lamina.index import is_index_spec, one_platform

    spec = one_platform(data, getattr(args, "platform", None), args.source) if is_index_spec(data) else parse_spec(data)
    with composed(spec, tempfile.gettempdir(), options, inventory=inventory) as image:  # the registry flags apply to its sources too
        yield image


def cmd_layers(args: argparse.Namespace) -> int:
    from lamina.index import is_index_spec, parse_index_spec, read_spec_file

    if is_spec(args.source) and is_index_spec(data := read_spec_file(args.source)) and not args.platform:
        return _index_layers(args, parse_index_spec(data))
    if not is_spec(args.source) and not args.platform and not args.source.startswith("docker-daemon:"):
        from lamina.sources import source_platforms

        platforms = source_platforms(args.source, _registry(args))
        if platforms:  # a multi-platform source: each platform's layers
            docs: list = []
            if not args.json:
                print(f"{args.source}  index of {len(platforms)} platforms: {', '.join(map(str, platforms))}")
            from lamina.index import for_platform

            for platform in platforms:
                try:
                    _one_source_layers(argparse.Namespace(**{**vars(args), "platform": str(platform)}),
                                       docs if args.json else None)
                except LaminaError as e:
                    raise for_platform(e, platform) from None
            if args.json:
                json.dump({"source": args.source, "platforms": docs}, sys.stdout, indent=2)
                sys.stdout.write("\n")
            return 0
    return _one_source_layers(args)


def _one_source_layers(args: argparse.Namespace, collect: Optional[list] = None) -> int:
    inventory = None
    if args.packages:
        from lamina.sbom import Inventory

        inventory = Inventory()
    # a spec's inventory comes from its package_db_layer (packages.json), or a walk of its layers
    with _image(args, inventory=inventory if is_spec(args.source) else None) as image:
        if inventory is not None and not is_spec(args.source):
            from lamina.build import inventory_of

            inventory_of(image.layers, inventory)
        return _layers(args, image, inventory, collect)


def _index_layers(args: argparse.Namespace, ispec: "IndexSpec") -> int:
    """`layers` of a multi-platform image: its index, then each platform's layers."""
    import tempfile

    from lamina.index import composed_index
    from lamina.sbom import Inventory

    inventories = [Inventory() for _ in ispec.platforms] if args.packages else None
    docs: list = []
    with composed_index(ispec, tempfile.gettempdir(), _registry(args), inventories=inventories) as index:
        platforms = ", ".join(str(i.platform) for i in index.images)
        if not args.json:
            print(f"{args.source}  index {index.descriptor.digest}  {len(index.images)} platforms: {platforms}")
        for i, image in enumerate(index.images):
            _layers(args, image, inventories[i] if inventories else None, docs if args.json else None)
    if args.json:
        json.dump({"source": args.source, "index": index.descriptor.digest, "platforms": docs}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _brought(image: "Image", inventory: "Inventory") -> dict[int, list[dict]]:
    """For each layer (by index), the packages it brought, as the SBOM attributes them."""
    from lamina.sbom import attribute

    out: dict[int, list[dict]] = {}
    for a in attribute([inventory.layers.get(layer.descriptor.digest) for layer in image.layers]):
        p = a.package
        out.setdefault(a.layer, []).append({"manager": p.tool, "name": p.name, "version": p.version,
                                            "architecture": p.architecture, "database": "/" + a.path})
    return out


def _layers(args: argparse.Namespace, image: "Image", inventory: Optional["Inventory"] = None,
            collect: Optional[list] = None) -> int:
    """Print `image`'s layers (with --json, its document; into `collect` instead when given)."""
    from lamina.layertar import entries

    selected: set = set()
    if args.select is not None:
        from lamina.select import parse_selector, select

        selected = {id(layer) for layer in select(image, parse_selector(args.select))}
    rows = []
    for position, layer in enumerate(image.layers):  # a composed image's layers: their place in it
        row = {
            "index": position,
            "digest": layer.descriptor.digest,
            "diff_id": layer.diff_id,
            "size": layer.descriptor.size,
            "media_type": layer.descriptor.media_type,
            "created_by": layer.created_by,
        }
        if args.select is not None:
            row["selected"] = id(layer) in selected
        if args.files and layer.has_bytes:
            row["files"] = [
                e.path + ("/" if e.kind == "dir" else "") + (f" -> {e.linkname}" if e.linkname else "")
                for e in entries(layer)
            ]
        rows.append(row)
    if inventory is not None:
        brought, unread = _brought(image, inventory), set(inventory.unread)
        for row in rows:
            row["packages"] = None if row["digest"] in unread else brought.get(row["index"], [])
    report = None
    if args.conflicts:
        from lamina.analyze.check import check
        from lamina.analyze.report import Policy
        from lamina.analyze.scan import scan_image

        report = check(scan_image(image), Policy(check_dependencies=False))
    if args.json:
        doc = {"source": args.source, "platform": str(image.platform), "layers": rows}
        if args.select is not None:
            doc["selector"] = args.select
        if report is not None:
            doc["conflicts"] = [f.to_json() for f in report.of_kind("conflict")]
        if collect is not None:
            collect.append(doc)
            return 0
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    picked = f"  (* = selected by layer={args.select})" if args.select is not None else ""
    print(f"{args.source}  platform {image.platform}  {len(rows)} layers{picked}")
    for row in rows:
        created = row["created_by"].replace("\n", " ")
        mark = "*" if row.get("selected") else " "
        print(f"{row['index']:>3}{mark} {row['digest'][:19]}  diff_id {row['diff_id'][:19]}  "
              f"{row['size']:>12}  {created[:80]}")
        for f in row.get("files", []):
            print(f"       {f}")
        if "packages" in row:
            pkgs = row["packages"]
            if pkgs is None:
                print("       packages: not read (the layer's bytes are not here)")
            elif pkgs:
                print(f"       packages it brought ({len(pkgs)}):")
            for p in pkgs or ():
                print(f"         {p['name']} {p['version']} {p['architecture']}  ({p['manager']})")
    if report is not None:
        sys.stdout.write(report.text(("conflict",), legend=False))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from lamina.analyze.index import write_index
    from lamina.analyze.scan import scan_source

    with _engine_source(args.source) as (source, _):
        name = args.name or (args.source if source != args.source else None)  # an engine image: as named
        result = scan_source(source, args.layer, name, _platform(args.platform), _registry(args))
    write_index(result.layers, args.out)
    print(json.dumps({"out": args.out, "skipped": list(result.skipped), "layers": [
        {"index": l.index, "digest": l.digest, "entries": len(l.entries)} for l in result.layers]}, sort_keys=True))
    return 0


def cmd_files_layer(args: argparse.Namespace) -> int:
    from lamina.analyze.index import write_index
    from lamina.analyze.scan import scan_files_layer
    from lamina.build import collect_files
    from lamina.newlayer import write_files_layer_dir
    from lamina.spec import parse_files

    with open(args.spec, "rb") as f:
        data = parse_json(f.read(), args.spec)
    files, file_dirs = parse_files(data)
    below = None
    if args.below:
        from lamina.analyze.below import from_indexes

        below = from_indexes(args.below)
    layer = write_files_layer_dir(collect_files(files, file_dirs), args.out, below)
    index = os.path.join(args.out, "index.json")
    write_index([scan_files_layer(layer, args.name or f"files of {args.spec}")], index)
    print(json.dumps({"out": args.out, "digest": layer.descriptor.digest, "diff_id": layer.diff_id,
                      "size": layer.descriptor.size, "index": index}, sort_keys=True))
    return 0


def cmd_package_db_layer(args: argparse.Namespace) -> int:
    from lamina.build import open_stack
    from lamina.pkgdb import plan_for_layers, report_lines, write_merge_dir
    from lamina.spec import parse_spec

    with open(args.spec, "rb") as f:
        spec = parse_spec(parse_json(f.read(), args.spec))
    base, layers = open_stack(spec, _registry(args))
    stack = [*(base.layers if base is not None else ()), *layers]
    wanted = below = None
    if args.index:
        # The stack's indexes (from `lamina scan`) say which layers hold a database: only those
        # are read, and the filesystem the layer is laid on is theirs.
        from lamina.analyze.index import read_index
        from lamina.analyze.stackfs import apply
        from lamina.pkgdb import databases_in_index

        indexes = {i.digest: i for path in args.index for i in read_index(path)}
        if all(l.descriptor.digest in indexes for l in stack):
            ordered = [indexes[l.descriptor.digest] for l in stack]
            wanted = [databases_in_index([e.path for e in i.entries]) for i in ordered]
            below = apply(ordered).fs
    found, walked = plan_for_layers(stack, wanted)
    if args.no_merge:  # the packages each layer lists only (for the SBOM): no merge layer
        from lamina.pkgdb import MergePlan

        found = MergePlan(read=found.read, unread=found.unread, stack=found.stack)
    layer = write_merge_dir(found, args.out, below if wanted is not None else walked,
                            args.name or f"package databases of {args.spec}")
    lines = report_lines(found.report())
    for line in lines:
        print(f"lamina: {line}", file=sys.stderr)
    print(json.dumps({"out": args.out, "layer": layer.descriptor.digest if layer is not None else None,
                      "read": found.read, "conflicts": len(found.conflicts), "lines": lines}, sort_keys=True))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from lamina.analyze.check import check
    from lamina.analyze.index import read_index
    from lamina.analyze.report import Policy
    from lamina.errors import CheckFailed

    stack = [layer for path in args.index for layer in read_index(path)]
    start = None
    if args.image_spec:
        from lamina.analyze.start import start_config_of_spec

        with open(args.image_spec, "rb") as f:
            start = start_config_of_spec(parse_json(f.read(), args.image_spec))
    merge_report = None
    if args.package_db:
        from lamina.pkgdb import read_merge_dir

        merged = read_merge_dir(args.package_db)
        merge_report = merged.report
        if merged.layer is not None:  # its index goes on the stack, below the files layer's (on top too)
            at = len(stack) - 1 if stack and stack[-1].on_top else len(stack)
            stack[at:at] = list(read_index(os.path.join(args.package_db, "index.json")))
    policy = Policy(args.on_conflict, tuple(args.allow), not args.no_check_dependencies, args.on_start_failure)
    report = check(stack, policy, start, merge_report)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
    sys.stdout.write(report.text())
    if report.errors:
        raise CheckFailed(report.error_summary())
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from lamina.extract import extract
    from lamina.select import parse_selector, select
    from lamina.sources import open_image

    from lamina.image import with_copies

    options = _registry(args)
    client = _registry_client(args.source, options)
    selector = parse_selector(args.layer)
    with _engine_export(args.source, selector if args.index and not args.shallow else None) as (source, copies, contents):
        image = with_copies(open_image(source, name=args.name or args.source, platform=_platform(args.platform),
                                       registry=options, client=client), copies)
        layers = select(image, selector)
        fetch_from = None
        if args.shallow:
            if not args.source.startswith("docker://"):
                raise SpecError(f"{args.source}: --shallow leaves the layer bytes in a registry, and this is not "
                                "a registry source (docker://...)")
            fetch_from = args.source
        selection = extract(image, layers, args.out, str(selector), index=args.index,
                            pause=_test_pause("copy"), fetch_from=fetch_from, contents=contents)
    summary = selection.to_json(image)
    if selection.package_databases is not None:  # the Pants plugin skips the merge when no layer has one
        summary["package_databases"] = selection.package_databases
    if client is not None:  # a registry source: the bytes of manifests and blobs this run received
        summary["downloaded"] = client.received
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _registry_client(source: str, options: "RegistryOptions") -> "Optional[RegistryClient]":
    """A client for a `docker://` source (one that counts what it receives), else None."""
    from lamina.registry.reference import is_registry_ref, parse_reference

    if not is_registry_ref(source):
        return None
    from lamina.registry.client import RegistryClient

    return RegistryClient(parse_reference(source).registry, options)


def cmd_credentials_where(args: argparse.Namespace) -> int:
    from lamina.registry.where import write_locations

    write_locations(args.write, os.environ)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from lamina.registry.source import resolve

    print(resolve(args.reference, _registry(args)).url)
    return 0


def _test_pause(point: str) -> Optional[Callable[[str], None]]:
    """A hook for tests that must stop a build at a known point, not after a guessed sleep.

    LAMINA_TEST_PAUSE_AT=POINT:MARKER: at POINT ("copy": a layer's bytes are in their temporary
    file in `lamina extract`, not yet checked and renamed into place) lamina writes that file's
    path to MARKER (atomically) and sleeps for an hour, to be killed there. Unset: no hook."""
    at, _, marker = os.environ.get("LAMINA_TEST_PAUSE_AT", "").partition(":")
    if at != point or not marker:
        return None

    def pause(path: str) -> None:
        with open(marker + ".tmp", "w") as f:
            f.write(path)
        os.replace(marker + ".tmp", marker)
        time.sleep(3600)

    return pause


def cmd_compose(args: argparse.Namespace) -> int:
    from lamina.build import build
    from lamina.spec import parse_spec

    with open(args.spec, "rb") as f:
        data = parse_json(f.read(), args.spec)
    if args.format and isinstance(data, dict):  # parse_spec reports a spec that is not an object
        data["format"] = args.format
    if not args.out and not args.audit and not args.sbom:
        raise SpecError("give --out (the image), --audit (its audit trail) or --sbom (its SBOM), or more")
    notes: list[str] = []
    from lamina.index import build_index, is_index_spec, parse_index_spec

    if is_index_spec(data):
        if args.placed_blobs:
            raise SpecError("--placed-blobs is for one image's spec, not a multi-platform one")
        index = build_index(parse_index_spec(data), args.out, audit=args.audit, notes=notes, sbom=args.sbom)
        for note in notes:
            print(f"lamina: {note}", file=sys.stderr)
        print(json.dumps({"index": index.descriptor.digest, "out": args.out,
                          "platforms": [{"platform": str(i.platform), "manifest": i.manifest_descriptor.digest,
                                         "layers": len(i.layers)} for i in index.images]}, sort_keys=True))
        return 0
    if args.placed_blobs and not args.out:
        raise SpecError("--placed-blobs lists the blobs an --out layout leaves out: give --out too")
    image = build(parse_spec(data), args.out, audit=args.audit, notes=notes, sbom=args.sbom, placed=args.placed_blobs)
    for note in notes:  # what the package database merge did
        print(f"lamina: {note}", file=sys.stderr)
    d = image.manifest_descriptor
    print(json.dumps({"manifest": d.digest, "config": image.config_descriptor.digest,
                      "layers": len(image.layers), "out": args.out}, sort_keys=True))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from lamina.validate import validate

    with _image(args) as image:
        report = validate(image)
    print(f"{args.source}: ok, {report.layers} layers, {report.bytes} bytes verified")
    return 0


def _progress(label: str, total: int) -> "Progress":
    from lamina.progress import Progress

    return Progress(label, total)


def cmd_push(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from lamina.compress import read_compressed
    from lamina.index import composed_index, is_index_spec, parse_index_spec, read_spec_file
    from lamina.registry.locations import BlobLocations, default_path
    from lamina.registry.push import parse_targets, push, push_index
    from lamina.sbom import Inventory

    targets = parse_targets(args.to)
    options = _registry(args)
    if args.sbom and not is_spec(args.source):
        raise SpecError("--sbom attaches the SBOM of a composed image: give a compose spec (SPEC.json)")
    data = read_spec_file(args.source) if is_spec(args.source) else None
    # an index spec with --platform: that platform's image only (as `_image` composes it)
    ispec = parse_index_spec(data) if is_index_spec(data) and not args.platform else None
    specs = ispec.platforms if ispec is not None else (_spec_of(args),) if data is not None else ()
    have = {}
    for spec in specs:
        for directory in spec.compressed:
            form = read_compressed(directory)
            have[form.diff_id] = form
    inventories = [Inventory() for _ in specs] if args.sbom else None
    locations = BlobLocations(default_path(os.environ))
    scratch = tempfile.mkdtemp(prefix="lamina-compress-", dir=os.environ.get("LAMINA_TMPDIR") or None)
    clients: dict = {}

    def pushable(i: int, image: "Image") -> tuple["Image", tuple["Artifact", ...]]:
        """The image as it goes up (compressed forms), and its SBOM for that image."""
        composed_layers = [layer.descriptor.digest for layer in image.layers]
        image = _distributable(args, image, targets, options, clients, scratch, have)
        if inventories is None:
            return image, ()
        renamed = inventories[i].renamed(dict(zip(composed_layers, (l.descriptor.digest for l in image.layers))))
        return image, (_sbom_artifact(specs[i], image, renamed, ispec is not None),)

    try:
        if ispec is not None:
            from lamina.index import ImageIndex

            with composed_index(ispec, tempfile.gettempdir(), options, inventories=inventories) as index:
                ready = [pushable(i, image) for i, image in enumerate(index.images)]
                results = push_index(ImageIndex(tuple(i for i, _ in ready), index.tags, index.source), targets,
                                     options, clients, locations, [r for _, r in ready])
        else:
            with _image(args, options, inventory=inventories[0] if inventories else None) as image:
                image, referrers = pushable(0, image)
                results = push(image, targets, options, clients, locations=locations, referrers=referrers)
        for result in results:
            print(result.summary(), flush=True)
            for attached in result.attached:
                print(attached.summary(result.target.registry), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _distributable(args: argparse.Namespace, image: "Image", targets: Sequence, options: "RegistryOptions",
                   clients: dict, scratch: str, have: dict) -> "Image":
    """`image` as a push sends it: uncompressed layers (from `docker save`, the engine) go up
    compressed, as `docker push` sends them; the config's diff_ids are the same. A layer a registry
    already keeps compressed (the engine pulled its image from there) is named by that blob; a form
    the spec names (`have`, by diff_id) is used as it is; the rest are compressed here."""
    if args.compression == "none":
        return image
    from lamina.compress import compress_missing, distributable
    from lamina.model import COMPRESSION_MEDIA_TYPE
    from lamina.registry.twins import registry_forms, with_registry_forms

    image = with_registry_forms(image, registry_forms(image, {t.registry for t in targets}, options, clients, _warn))
    wanted = COMPRESSION_MEDIA_TYPE[args.compression]
    usable = {k: f for k, f in have.items() if f.descriptor.media_type == wanted}
    forms = compress_missing(image, args.compression, scratch, usable, _progress)
    have.update(forms)  # the next platform of an index reuses what this one compressed
    return distributable(image, forms)


def _sbom_artifact(spec: "Spec", image: "Image", inventory: "Inventory", of_index: bool = False) -> "Artifact":
    """The SBOM of the image as it is pushed (its manifest and layer digests: the compressed forms
    when layers go up compressed), as the artifact a push attaches to its manifest."""
    from lamina.build import sbom_bytes
    from lamina.registry.referrers import ANN_CREATED, CYCLONEDX_JSON, Artifact

    name = (spec.target or "image").rsplit(":", 1)[-1].rsplit("/", 1)[-1] or "image"
    if of_index:  # one platform's, as compose names them: app.linux-arm64.cdx.json
        name += "." + (spec.platform or image.platform).slug()
    created = str(image.config.get("created") or "")
    epoch = created.startswith("1970-01-01T00:00:00")  # lamina's default: says nothing of when
    return Artifact(CYCLONEDX_JSON, sbom_bytes(spec, image, inventory), f"{name}.cdx.json",
                    ((ANN_CREATED, created),) if created and not epoch else ())


def cmd_compress(args: argparse.Namespace) -> int:
    """One layer's compressed form, for a push to send (the Pants plugin caches it per layer)."""
    from lamina.compress import compress_layer
    from lamina.image import Layer
    from lamina.model import OCI_LAYER, Descriptor, check_digest

    digest = check_digest(args.digest, "--digest")
    path = args.blob
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InvalidSource(f"{path}: {e.strerror}") from None
    layer = Layer(Descriptor(OCI_LAYER, digest, size), digest, -1, (), path=path, source=path)
    bar = _progress(f"compressing {path}", size)
    try:
        form = compress_layer(layer, args.compression, args.out, bar)
    finally:
        bar.close()
    print(json.dumps(form.to_json(), sort_keys=True), flush=True)
    return 0


def cmd_daemon_id(args: argparse.Namespace) -> int:
    from lamina.daemon import connect, resolve

    print(resolve(connect(os.environ), args.name))
    return 0


def cmd_daemon_ids(args: argparse.Namespace) -> int:
    from lamina.daemon import connect, listed_names

    print(json.dumps(listed_names(connect(os.environ)), sort_keys=True))
    return 0


def cmd_daemon_export(args: argparse.Namespace) -> int:
    from lamina.daemon import connect, export

    exported = export(connect(os.environ), args.name, args.out)
    print(exported.image_id)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from lamina.build import audit_bytes, sbom_bytes, write_small_file
    from lamina.daemon import connect, load

    engine = connect(os.environ)
    if (args.audit or args.sbom) and not is_spec(args.source):
        raise SpecError("--audit and --sbom record where a composed image's layers came from: give a compose spec "
                        "(SPEC.json)")
    inventory = None
    if args.sbom:
        from lamina.sbom import Inventory

        inventory = Inventory()
    with _image(args, inventory=inventory) as image:
        # made before the load: a failure here leaves the engine as it was
        spec = _spec_of(args) if args.audit or args.sbom else None
        trail = audit_bytes(spec, image) if args.audit and spec is not None else None
        document = sbom_bytes(spec, image, inventory) if spec is not None and inventory is not None else None
        print(load(engine, image, tuple(args.tag or ())).summary())
        if args.audit and trail is not None:
            write_small_file(args.audit, trail)
        if args.sbom and document is not None:
            write_small_file(args.sbom, document)
    return 0


def _spec_of(args: argparse.Namespace) -> "Spec":
    """The compose spec `args.source` names, as `_image` composes it: one platform's of an index spec."""
    from lamina.index import is_index_spec, one_platform, read_spec_file
    from lamina.spec import parse_spec

    data = read_spec_file(args.source)
    return one_platform(data, getattr(args, "platform", None), args.source) if is_index_spec(data) else parse_spec(data)


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="append", metavar="HOST[:PORT]",
                   help="allow plain HTTP to this registry (loopback hosts always may); repeatable")
    p.add_argument("--ca-bundle", metavar="PATH",
                   help="PEM file of CAs to trust for registry TLS, besides the system's and certs.d's")
    p.add_argument("--require-pinned", action="store_true",
                   help="refuse docker:// sources named by tag rather than @sha256 digest")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="registry read timeout (default 60)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamina",
        description="Compose container images from layers of existing images, keeping every layer's digest.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    src_help = ("image source: docker-archive:PATH[:TAG], oci:DIR[:REF], oci-archive:PATH[:REF], "
                "docker://HOST[:PORT]/REPO(@sha256:DIGEST|:TAG), docker-daemon:NAME (the local engine, "
                "DOCKER_HOST: streamed into a temporary file, nothing kept), or a bare path (sniffed)")
    any_help = src_help + ("; or a compose spec (SPEC.json, as `lamina compose` takes): the image it describes, "
                           "composed on the fly, its layers read from their sources with nothing written first")

    layers = sub.add_parser("layers", help="list an image's layers (index, digest, diff_id, size, created_by)")
    layers.add_argument("source", help=any_help)
    layers.add_argument("--files", action="store_true", help="also list each layer's entries (like tar -tf)")
    layers.add_argument("--json", action="store_true", help="print JSON")
    layers.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    layers.add_argument("--conflicts", action="store_true",
                        help="also report paths the image's layers provide with different content")
    layers.add_argument("--select", metavar="SELECTOR",
                        help="mark the layers this selector picks (as in `lamina extract`)")
    layers.add_argument("--packages", action="store_true",
                        help="also list the packages each layer brought (dpkg and apk databases), as the SBOM "
                             "attributes them: reads each layer's package databases (a spec's packages.json)")
    _registry_flags(layers)
    layers.set_defaults(func=cmd_layers)

    sc = sub.add_parser("scan", help="index layers (entries, content hashes, ELF facts) as JSON for `check`")
    sc.add_argument("source", help=src_help + "; a bundle from `lamina extract` scans its selected layers")
    sc.add_argument("--layer", help="selector of the layers to scan (default: a bundle's, else all)")
    sc.add_argument("--out", required=True, help="the index file to write")
    sc.add_argument("--name", help="how the source is recorded in the index (default: a bundle's, else SOURCE)")
    sc.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    sc.set_defaults(func=cmd_scan)

    fl = sub.add_parser(
        "files-layer",
        help="make the layer of a spec's files once, for `compose` (spec key files_layer) and `check` (its index.json)")
    fl.add_argument("spec", help="a compose spec, or a JSON object with just its files and file_dirs")
    fl.add_argument("--out", required=True,
                    help="directory to write: files-layer.tar.gz, files-layer.json (its description), index.json")
    fl.add_argument("--name", help="how the layer is named in reports (default: files of SPEC)")
    fl.add_argument("--below", action="append", default=[], metavar="INDEX",
                    help="an index (from `lamina scan`) of layers the new layer goes on; repeat, base first. "
                         "The files are then laid on them as a Dockerfile COPY writes: through their symlinks "
                         "(/bin/x into /usr/bin/x on a usr-merged base), existing directories kept as they are")
    fl.set_defaults(func=cmd_files_layer)

    ck = sub.add_parser("check", help="check a stack of layer indexes (base first) for composition problems")
    ck.add_argument("--index", action="append", required=True, help="an index from `lamina scan`; repeat, base first")
    ck.add_argument("--on-conflict", choices=("warn", "error", "ignore"), default="warn",
                    help="how to treat paths layers provide with different content (default: warn)")
    ck.add_argument("--allow", action="append", default=[], metavar="GLOB",
                    help="a path glob whose conflicts are allowed, e.g. 'etc/*' (repeatable)")
    ck.add_argument("--no-check-dependencies", action="store_true",
                    help="skip the check that ELF files find their interpreter and libraries")
    ck.add_argument("--image-spec", metavar="SPEC",
                    help="the compose spec of the image the stack makes (its base, platform and config are "
                         "used): also check that its entrypoint + cmd would start")
    ck.add_argument("--on-start-failure", choices=("warn", "error", "ignore"), default="warn",
                    help="how to treat a start command that would not start (default: warn)")
    ck.add_argument("--package-db", metavar="DIR",
                    help="a directory from `lamina package-db-layer` for this stack: its layer (if any) goes "
                         "on the stack, and packages the layers' databases disagree on are conflicts")
    ck.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    ck.set_defaults(func=cmd_check)

    pd = sub.add_parser(
        "package-db-layer",
        help="merge the package databases (dpkg status, apk installed) a spec's layers from different images "
             "each rewrote into one layer, for `compose` (spec key package_db_layer) and `check` (--package-db)")
    pd.add_argument("spec", help="a compose spec: its base and layers are the stack (its files are not read)")
    pd.add_argument("--out", required=True,
                    help="directory to write: package-db-layer.json (the merge report, and the layer's description "
                         "or null when no merge is needed), package-db-layer.tar.gz, index.json and packages.json "
                         "(the packages each layer's databases list, for compose's --sbom)")
    pd.add_argument("--index", action="append", default=[], metavar="INDEX",
                    help="an index (from `lamina scan`) of the stack's layers; repeatable. With indexes of every "
                         "layer, only the layers that hold a database are read")
    pd.add_argument("--name", help="how the layer is named in reports (default: package databases of SPEC)")
    pd.add_argument("--no-merge", action="store_true",
                    help="merge nothing: write only what each layer's databases list (packages.json, for "
                         "compose's --sbom) and a description of no layer")
    _registry_flags(pd)
    pd.set_defaults(func=cmd_package_db_layer)

    ex = sub.add_parser("extract", help="write selected layers of an image, verified, as a sparse OCI layout")
    ex.add_argument("source", help=src_help)
    ex.add_argument("--layer", required=True, help="selector: index, slice, sha256:PREFIX, created_by=RE, path=P")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--name", help="how the source is recorded in the output (default: SOURCE)")
    ex.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    ex.add_argument("--index", action="store_true",
                    help="also index the selected layers (what `lamina scan` of the bundle writes) into "
                         "lamina-index.json, in the same pass that copies them")
    ex.add_argument("--shallow", action="store_true",
                    help="for a docker:// source: keep only its manifest and config, no layer bytes; a "
                         "push mounts the layers, and anything that needs their bytes reads them from there")
    _registry_flags(ex)
    ex.set_defaults(func=cmd_extract)

    co = sub.add_parser("compose", help="compose an image from a JSON spec")
    co.add_argument("spec", help="path of the JSON spec (see README)")
    co.add_argument("--out", help="output path (a file, or a directory for --format oci); without it, only "
                                  "--audit is written and no layer byte is read (but for the package database "
                                  "merge of layers from two or more images: \"merge_package_databases\": false "
                                  "in the spec turns it off)")
    co.add_argument("--format", choices=("docker-archive", "oci", "oci-archive"), help="overrides the spec's format")
    co.add_argument("--audit", help="also write where each layer came from (source, selector, digest) as JSON here")
    co.add_argument("--sbom", metavar="PATH",
                    help="also write the image's SBOM here (CycloneDX 1.5 JSON): every package its dpkg and apk "
                         "databases list, with the layer that brought it. Reads the layers' package databases "
                         "(with the spec's package_db_layer, its packages.json instead)")
    co.add_argument("--placed-blobs", metavar="PATH",
                    help="--format oci only: leave out of the layout the verified layer blobs that are already "
                         "files of a layout (a bundle's blobs/sha256/<hex>), and list them here as JSON "
                         "({\"blobs\": [{\"digest\", \"path\"}]}) for the caller to put in (Pants' plugin "
                         "merges the bundles' digests it already holds: no layer byte is read)")
    co.set_defaults(func=cmd_compose)

    va = sub.add_parser("validate", help="check every blob of an image against its digest, size and diff_id")
    va.add_argument("source", help=any_help)
    va.add_argument("--platform", help="os/arch[/variant]")
    _registry_flags(va)
    va.set_defaults(func=cmd_validate)

    pu = sub.add_parser("push", help="push an image to registry tags (HEAD, cross-repo mount, upload; manifest last)")
    pu.add_argument("source", help=any_help)
    pu.add_argument("--to", action="append", required=True, metavar="HOST[:PORT]/REPO:TAG",
                    help="a tag to push to; repeatable")
    pu.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform source")
    pu.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip",
                    help="how uncompressed layers (docker save, the engine) are sent: compressed "
                         "deterministically first (default gzip), or as they are (none)")
    pu.add_argument("--sbom", action="store_true",
                    help="with a compose spec: also attach the image's SBOM (CycloneDX 1.5 JSON, as `compose --sbom` "
                         "writes it, for the manifest as pushed) to the pushed manifest as an OCI referrer: "
                         "through the registry's referrers API, else the referrers tag sha256-<hex>; before any tag")
    _registry_flags(pu)
    pu.set_defaults(func=cmd_push)

    cz = sub.add_parser("compress", help="write an uncompressed layer's compressed form (blob and "
                                         "compressed.json) for `push` to send; checks the layer's digest")
    cz.add_argument("blob", help="the uncompressed layer blob (a file)")
    cz.add_argument("--digest", required=True, help="its sha256 digest (= its diff_id), checked as it is read")
    cz.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    cz.add_argument("--out", required=True, help="directory to write (replaced whole)")
    cz.set_defaults(func=cmd_compress)

    rs = sub.add_parser("resolve", help="print a registry reference pinned to the digest its tag names now "
                        "(docker://HOST/REPO:TAG@sha256:..., the index's digest for a multi-platform image)")
    rs.add_argument("reference", help="[docker://]HOST[:PORT]/REPO[:TAG]")
    _registry_flags(rs)
    rs.set_defaults(func=cmd_resolve)

    cw = sub.add_parser("credentials-where", help="write where this environment's Docker config and certs.d "
                        "are (paths, no credentials) to a JSON file that LAMINA_CREDENTIALS_FROM can name")
    cw.add_argument("--write", required=True, help="the JSON file to write (replaced whole)")
    cw.set_defaults(func=cmd_credentials_where)

    di = sub.add_parser("daemon-id", help="print the ID of an image in the Docker engine (DOCKER_HOST)")
    di.add_argument("name", help="image name or ID in the engine")
    di.set_defaults(func=cmd_daemon_id)

    dl = sub.add_parser("daemon-ids", help="print, as JSON, the image ID each tag (and full ID) in the Docker engine means "
                        "(one call for all of a build's engine names)")
    dl.set_defaults(func=cmd_daemon_ids)

    de = sub.add_parser("daemon-export", help="save an image from the Docker engine (DOCKER_HOST) to a tar; "
                                              "prints its image ID")
    de.add_argument("name", help="image name or ID in the engine")
    de.add_argument("--out", required=True, help="path of the docker-save tar to write")
    de.set_defaults(func=cmd_daemon_export)

    lo = sub.add_parser("load", help="load an image into the Docker engine, sending only layers it lacks")
    lo.add_argument("source", help=any_help)
    lo.add_argument("--tag", action="append", metavar="NAME:TAG", help="tag to give it (default: its own); repeatable")
    lo.add_argument("--audit", metavar="PATH", help="with a compose spec: also write its audit trail (where each "
                                                    "layer came from, as `compose --audit` writes it)")
    lo.add_argument("--sbom", metavar="PATH", help="with a compose spec: also write its SBOM (as `compose --sbom` "
                                                   "writes it)")
    lo.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform source")
    _registry_flags(lo)
    lo.set_defaults(func=cmd_load)
    return p


def _report_io() -> None:
    """With LAMINA_REPORT_IO=1: the process's own I/O counters (/proc/self/io) on stderr, for the
    bench: rchar/wchar count every byte read and written through system calls (page cache
    included, kernel copies too), read_bytes/write_bytes what reached the storage layer."""
    try:
        with open("/proc/self/io") as f:
            counters = dict(line.split(": ", 1) for line in f.read().splitlines())
    except OSError:
        return
    keys = ("rchar", "wchar", "read_bytes", "write_bytes")
    print("lamina: io: " + " ".join(f"{k}={counters[k].strip()}" for k in keys if k in counters), file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    if os.environ.get("LAMINA_REPORT_IO") == "1":
        import atexit

        atexit.register(_report_io)
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

"""The project image a compiled spec names, and the record of what was built and published.

The spec's tasks name ``components.base.BASE_IMAGE``: the configured repository tagged with a hash
of the code (``components.fingerprint.image_reference``). ``make image`` builds exactly that
reference and ``make push`` publishes it (``make kind-up`` loads it into the kind cluster); each
records what it did, with the image's digest, in ``build/image.json``::

    {"images": {"REPO:TAG": {"built":  {"digest": "sha256:…", "at": "2026-12-08T01:50:00Z"},
                             "pushed": {"digest": "sha256:…", "at": "…"},
                             "loaded": {"digest": "sha256:…", "at": "…"}}}}

Before a spec is submitted, ``check`` refuses it when an image it names was never published for
that platform from this code: Vertex AI pulls from a registry (pushed); a KFP cluster pulls from
a registry or, on kind, uses the image loaded into it (pushed or loaded).

    python -m pipelines.cloud.image name                      # the reference this code builds
    python -m pipelines.cloud.image record built|pushed|loaded [IMAGE] [--digest sha256:…]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

RECORD = Path("build/image.json")
EVENTS = ("built", "pushed", "loaded")
# What each platform needs to have happened to an image before a run there can pull it.
NEEDS = {"vertex": ("pushed",), "kfp": ("pushed", "loaded")}
_HOW = {"vertex": "`make push` builds and pushes it", "kfp": "`make push` pushes it; `make kind-up` loads it into kind"}


class ImageError(RuntimeError):
    """The image is not available where the run would pull it (one line naming it)."""


def reference() -> str:
    """The image reference this code builds and the compiled spec names."""
    from components.base import BASE_IMAGE

    return BASE_IMAGE


def read(path: str | Path = RECORD) -> dict:
    """The record (``{"images": {}}`` when nothing was recorded)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"images": {}}
    except ValueError as exc:
        raise ImageError(f"{path}: not a record of images ({exc}); delete it and run `make image` again") from None
    return data if isinstance(data.get("images"), dict) else {"images": {}}


def record(event: str, image: str, digest: str, path: str | Path = RECORD) -> dict:
    """Record that `image` (with `digest`) was built, pushed or loaded; returns the image's entry."""
    if event not in EVENTS:
        raise ValueError(f"event {event!r}: expected one of {', '.join(EVENTS)}")
    path = Path(path)
    data = read(path)
    entry = data["images"].setdefault(image, {})
    entry[event] = {"digest": digest, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
    return entry


def spec_images(spec: Mapping) -> set[str]:
    """Every image the spec's tasks run in."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return {e["container"]["image"] for e in executors.values() if "container" in e}


def check(images: Iterable[str] | Mapping, platform: str, path: str | Path = RECORD) -> None:
    """Refuse (ImageError, one line) when an image — given, or named by a compiled spec — was not
    pushed (or, for kfp, loaded into the cluster) from this code, as ``build/image.json`` records."""
    if isinstance(images, Mapping):
        images = spec_images(images)
    images = sorted(images)
    if not images:
        raise ImageError("the spec names no container image")
    recorded = read(path)["images"]
    needs = NEEDS[platform]
    for image in images:
        done = recorded.get(image, {})
        if not any(event in done for event in needs):
            state = "was built but never pushed" if "built" in done else "was never built or pushed from this code"
            if platform == "kfp" and "built" in done:
                state = "was built but never pushed or loaded into the cluster"
            raise ImageError(f"image {image} {state} (no record in {path}); {_HOW[platform]}")


def _docker_digest(event: str, image: str) -> str:
    """The image's digest as docker knows it: the registry digest after a push, the image id otherwise."""
    field = "{{json .RepoDigests}}" if event == "pushed" else "{{.Id}}"
    try:
        out = subprocess.run(
            ["docker", "image", "inspect", "-f", field, image], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"docker image inspect {image}: {getattr(exc, 'stderr', '') or exc}".strip()) from None
    if event != "pushed":
        return out
    repository = image.rsplit(":", 1)[0]
    digests = [d for d in json.loads(out or "[]") if d.split("@", 1)[0] == repository]
    if not digests:
        raise ImageError(f"{image}: docker knows no registry digest for it; was it pushed?")
    return digests[0].split("@", 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.cloud.image", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("name", help="print the image reference this code builds")
    recording = commands.add_parser("record", help="record that the image was built, pushed or loaded")
    recording.add_argument("event", choices=EVENTS)
    recording.add_argument("image", nargs="?", help="default: the reference this code builds")
    recording.add_argument("--digest", help="default: asked of docker")
    recording.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args(argv)
    if args.command == "name":
        print(reference())
        return 0
    image = args.image or reference()
    try:
        digest = args.digest or _docker_digest(args.event, image)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    record(args.event, image, digest, args.record)
    print(f"recorded {image} {args.event} ({digest}) in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

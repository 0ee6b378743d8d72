"""Summarise TensorBoard event files on a headless server.

    python -m pix2pix.tools.tb RUN_OR_SWEEP... [--export-images DIR]

Per run and scalar tag: the number of points, the step range, first, last, min and max values.
`--export-images DIR` writes the logged images (sample grids) as PNG files. Event files are read
with the protobufs that ship with tensorboardX, so the tensorboard package is not needed.
"""

from __future__ import annotations

import argparse
import math
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tensorboardX.proto import event_pb2

from pix2pix.errors import Pix2PixError
from pix2pix.runs import find_run_files

EVENT_GLOB = "events.out.tfevents.*"


def read_events(path: Path) -> Iterator[event_pb2.Event]:
    """The events of one file (TFRecord: length, its CRC, the Event protobuf, its CRC); a
    truncated last record (a run still writing, or killed) ends the file."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            return
        event = event_pb2.Event()
        event.ParseFromString(data[start:end])
        yield event
        offset = end + 4


@dataclass
class ScalarSeries:
    points: list[tuple[int, float]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.points)
        values = [v for _, v in ordered]
        finite = [v for v in values if math.isfinite(v)]
        return {
            "points": len(ordered),
            "first_step": ordered[0][0],
            "last_step": ordered[-1][0],
            "first": values[0],
            "last": values[-1],
            "min": min(finite) if finite else math.nan,
            "max": max(finite) if finite else math.nan,
        }


@dataclass
class RunEvents:
    """Scalars by tag (the newest value per step, as TensorBoard shows) and images by tag and step."""

    name: str
    scalars: dict[str, dict[int, float]] = field(default_factory=dict)
    images: dict[str, dict[int, bytes]] = field(default_factory=dict)


def find_event_files(paths: list[Path]) -> dict[Path, list[Path]]:
    """Event files grouped by the folder that holds them (a run's tensorboard/)."""
    try:
        runs = find_run_files(paths, EVENT_GLOB)
    except Pix2PixError as err:
        raise SystemExit(f"error: {err}") from None
    if not runs:
        raise SystemExit(f"error: no TensorBoard event files ({EVENT_GLOB}) under {', '.join(map(str, paths))}")
    return runs


def run_name(folder: Path) -> str:
    """A run's name: its folder, without the tensorboard/ that holds the events."""
    return str(folder.parent if folder.name == "tensorboard" else folder)


def load_run(folder: Path, files: list[Path]) -> RunEvents:
    run = RunEvents(run_name(folder))
    for file in sorted(files, key=lambda f: f.name):  # events.out.tfevents.<time>: oldest first
        for event in read_events(file):
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    run.scalars.setdefault(value.tag, {})[event.step] = value.simple_value
                elif kind == "image":
                    run.images.setdefault(value.tag, {})[event.step] = value.image.encoded_image_string
    return run


def format_table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    )


def describe(run: RunEvents) -> str:
    header = ["tag", "points", "steps", "first", "last", "min", "max"]
    rows = [header]
    for tag in sorted(run.scalars):
        s = ScalarSeries(sorted(run.scalars[tag].items())).summary()
        rows.append(
            [
                tag,
                str(s["points"]),
                f"{s['first_step']}-{s['last_step']}",
                *(f"{s[k]:.6g}" for k in ("first", "last", "min", "max")),
            ]
        )
    images = ", ".join(f"{tag} ({len(steps)})" for tag, steps in sorted(run.images.items())) or "none"
    return f"{run.name}\n{format_table(rows)}\nimages: {images}"


def export_images(run: RunEvents, out: Path, root_names: dict[str, str]) -> list[Path]:
    written = []
    for tag, steps in run.images.items():
        for step, encoded in sorted(steps.items()):
            safe_tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
            path = out / root_names[run.name] / f"{safe_tag}_step{step:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encoded)
            written.append(path)
    return written


def short_names(names: list[str]) -> dict[str, str]:
    """Folder names for exported images: each run's path below the runs' common parent."""
    parts = [Path(n).parts for n in names]
    common = 0
    while len(names) > 1 and all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    if len(names) == 1:
        return {names[0]: Path(names[0]).name}
    return {n: "_".join(p[common:]) for n, p in zip(names, parts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pix2pix.tools.tb", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or event files")
    parser.add_argument("--export-images", type=Path, metavar="DIR", help="write the logged images as PNG here")
    args = parser.parse_args(argv)
    runs = [load_run(folder, files) for folder, files in find_event_files(args.paths).items()]
    print("\n\n".join(describe(run) for run in runs))
    if args.export_images:
        names = short_names([run.name for run in runs])
        count = sum(len(export_images(run, args.export_images, names)) for run in runs)
        print(f"\nwrote {count} images to {args.export_images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

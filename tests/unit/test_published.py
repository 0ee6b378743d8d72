"""Published weights: PyTorch files read without PyTorch (and nothing in them run), the name tables, the
networks they imply, and parity with the original networks (tests/fixtures/published, made once with torch)."""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from hydra.utils import instantiate

from pix2pix import checkpoint
from pix2pix.api import load_generator
from pix2pix.config.compose import compose
from pix2pix.config.implied import apply_implied, resolve_trained_run
from pix2pix.errors import Pix2PixError
from pix2pix.runs import refuse_published_resume
from pix2pix.tasks.convert import recorded_overrides
from pix2pix.weights import mapping, published
from pix2pix.weights.names import name_hint, tables
from pix2pix.weights.torchfile import RefusedPickle, read_torch_file
from tests.fixtures.published.parity import CASES  # file, role, input, reference output: every format and kind

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "published"
REFERENCE = np.load(FIXTURES / "reference.npz")
PARITY = 1e-4  # of the output scale (max |reference output|)


def network_for(pub: published.Published):
    cfg = compose([item for item in pub.implied if not item.startswith("dataset.")])
    return instantiate(cfg.model.generator if pub.role == "G" else cfg.model.discriminator)


def deterministic_output(net, x: np.ndarray) -> np.ndarray:
    net.set_train(False)
    out = net(ms.Tensor(x.astype(np.float32))).asnumpy()
    return out[:, :, ::2, ::2] if out.shape[-1] == 256 else out  # the fixture keeps every other pixel at 256


@pytest.mark.parametrize(("name", "role", "x", "expected"), CASES)
def test_imported_network_computes_what_the_original_does(name, role, x, expected):
    pub = published.describe(FIXTURES / name, role)
    net = network_for(pub)
    mapping.load_into(net, FIXTURES / name, role)
    reference = REFERENCE[expected]
    diff = np.abs(deterministic_output(net, REFERENCE[x]) - reference).max()
    assert diff <= PARITY * np.abs(reference).max(), f"{name} {role}: max |difference| {diff:.3g}"


def set_weights(net, arrays: dict[str, np.ndarray]):
    params = dict(net.parameters_and_names())
    for key, array in arrays.items():
        params[key].set_data(ms.Tensor(array))
    return net


def test_a_wrong_mapping_would_show_in_the_output():
    """The parity check can fail: MMagic's generator without its BGR flip, the ModelZoo's without its skip swap."""
    mmagic = published.describe(FIXTURES / "unet_256.mmagic.pth")
    net = network_for(mmagic)
    set_weights(net, mapping.weights_for(dataclasses.replace(mmagic, bgr=False), net))
    assert np.abs(deterministic_output(net, REFERENCE["x256"]) - REFERENCE["mmagic_g"]).max() > 100 * PARITY

    zoo = published.describe(FIXTURES / "Generator_200.ckpt")
    net = network_for(zoo)
    arrays = mapping.weights_for(zoo, net)
    up1 = [name for name, kind, _ in mapping.weighted_cells(net) if kind == "deconv"][-1]
    weight = arrays[f"{up1}.weight"]
    arrays[f"{up1}.weight"] = np.concatenate([weight[weight.shape[0] // 2 :], weight[: weight.shape[0] // 2]])
    set_weights(net, arrays)
    assert np.abs(deterministic_output(net, REFERENCE["x256"]) - REFERENCE["modelzoo_g"]).max() > 100 * PARITY


def test_each_format_is_recognised_from_its_content_with_the_config_it_implies(tmp_path):
    base = ["model/generator=unet_256", "model.generator.ngf=2", "model.input_nc=3", "model.output_nc=3"]
    expect = {
        "unet_256.zip.pth": ("PyTorch zip", "reference", [*base, "model.norm=batch"]),
        "unet_256.legacy.pth": ("PyTorch legacy", "reference", [*base, "model.norm=batch"]),
        "unet_256.mmagic.pth": ("PyTorch zip", "mmagic", [*base, "model.norm=batch"]),
        "Generator_200.ckpt": ("MindSpore checkpoint", "modelzoo", [*base, "model.generator.use_dropout=false"]),
        "resnet_6blocks.zip.pth": ("PyTorch zip", "reference", ["model/generator=resnet_6blocks",
                                                                "model.generator.use_dropout=true"]),
        "unet_128_instance.legacy.pth": ("PyTorch legacy", "reference", ["model/generator=unet_128",
                                                                         "model.norm=instance"]),
    }  # fmt: skip
    for name, (container, naming, implied) in expect.items():
        renamed = tmp_path / f"weights_{len(name)}.bin"  # the content decides, not the name
        renamed.write_bytes((FIXTURES / name).read_bytes())
        pub = published.describe(renamed)
        assert (pub.container, pub.naming) == (container, naming), name
        assert set(implied) <= set(pub.implied), (name, pub.implied)
    assert published.describe(FIXTURES / "unet_256.mmagic.pth").bgr  # MMGeneration's generators.<domain>.
    assert not published.describe(FIXTURES / "unet_256.zip.pth").bgr
    assert published.has_discriminator(FIXTURES / "unet_256.mmagic.pth")
    assert not published.has_discriminator(FIXTURES / "unet_256.zip.pth")


def test_a_published_name_tells_the_direction(tmp_path):
    for folder, direction in (("facades_label2photo_pretrained", "BtoA"), ("sat2map_pretrained", "AtoB"),
                              ("map2sat_pretrained", "BtoA"), ("day2night_pretrained", "BtoA")):  # fmt: skip
        path = tmp_path / folder / "latest_net_G.pth"
        assert name_hint(path).direction == direction
        path.parent.mkdir()
        path.write_bytes((FIXTURES / "unet_256.zip.pth").read_bytes())
        assert f"dataset.direction={direction}" in published.describe(path).implied
    assert name_hint(tmp_path / "mine" / "latest_net_G.pth") is None


def test_the_tables_name_every_weighted_layer_of_our_networks():
    """Row by row, the kinds of our cells; the shapes at the published width (64) for the paper's pair, and
    scaled down with the width for the rest (building each at 64 takes seconds)."""
    for role, group, width in (("G", "generator", "ngf"), ("D", "discriminator", "ndf")):
        for table in tables(role):
            full = table.network in ("unet_256", "basic")
            narrow = [] if full else [f"model.{group}.{width}=8"]
            cells = mapping.weighted_cells(instantiate(compose([*table.overrides, *narrow]).model[group]))
            assert [kind for _, kind, _ in cells] == [row.kind for row in table.rows], table.network
            for (_, kind, cell), row in zip(cells, table.rows):
                shape = tuple(cell.weight.shape) if kind != "norm" else tuple(cell.gamma.shape)
                expected = row.shape if full else tuple(n // 8 if n % 64 == 0 else n for n in row.shape)
                assert shape == expected, (table.network, row.layer)
            names = [row.names["reference"] for row in table.rows]
            assert len(set(names)) == len(names)


def test_the_reader_takes_apart_views_half_and_bfloat16_in_both_formats():
    for name in ("odd_tensors.zip.pth", "odd_tensors.legacy.pth"):
        obj = read_torch_file(FIXTURES / name)
        for key in ("transposed", "offset_view", "half", "bfloat16"):
            np.testing.assert_allclose(obj[key].astype(np.float32), REFERENCE[f"odd_{key}"], rtol=0, atol=0)
        assert int(obj["count"]) == 7
        assert obj["nested"]["text"] == "kept" and obj["nested"]["list"][0].shape == (6,)
        lazy = read_torch_file(FIXTURES / name, read_tensors=False)
        assert lazy["transposed"].size == (6, 4) and lazy["transposed"].storage.array is None  # shapes, no bytes


class RunsACommand:
    """What a hostile file pickles: unpickling it would call os.system (and leave `marker` behind)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ImportsAModule:
    def __reduce__(self):
        return __import__, ("antigravity",)


def hostile_zip(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


def legacy_stream(path: Path, payload: bytes) -> Path:
    header = b"".join(
        pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    path.write_bytes(header + payload)
    return path


def test_a_hostile_pickle_is_refused_and_runs_nothing(tmp_path, capfd):
    marker = tmp_path / "ran"
    command = pickle.dumps({"model.0.weight": RunsACommand(marker)}, protocol=2)
    imports = pickle.dumps({"w": ImportsAModule()}, protocol=4)
    files = [
        (hostile_zip(tmp_path / "zip.pth", command), "posix.system"),
        (legacy_stream(tmp_path / "legacy.pth", command), "posix.system"),
        (hostile_zip(tmp_path / "import.pth", imports), "builtins.__import__"),
    ]
    for path, refused in files:
        with pytest.raises(RefusedPickle) as err:
            published.describe(path)
        message = str(err.value)
        assert str(path) in message and refused in message and "nothing of it was run" in message
        assert "\n" not in message
    assert not marker.exists()
    assert "antigravity" not in capfd.readouterr().out


def test_a_whole_pickled_model_is_refused_by_name(tmp_path):
    """torch.save(model) pickles the model's class: the one line names it and says what to save instead."""
    payload = b"\x80\x02cmodels.networks\nUnetGenerator\nq\x00)\x81q\x01."  # GLOBAL, EMPTY_TUPLE, NEWOBJ
    with pytest.raises(RefusedPickle, match=r"models\.networks\.UnetGenerator.*state_dict"):
        read_torch_file(hostile_zip(tmp_path / "model.pth", payload))


def test_a_file_of_neither_format_is_one_line(tmp_path):
    junk = tmp_path / "notes.pth"
    junk.write_text("hello\n")
    with pytest.raises(Pix2PixError, match=r"notes\.pth: neither a PyTorch file .* nor a MindSpore checkpoint"):
        published.describe(junk)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((FIXTURES / "unet_256.legacy.pth").read_bytes()[:5000])
    with pytest.raises(Pix2PixError, match=r"cut\.pth: not a readable PyTorch file"):
        read_torch_file(truncated)


def test_a_network_that_does_not_match_names_the_first_differing_tensor_and_the_fit():
    pub = published.describe(FIXTURES / "unet_256.zip.pth")
    wider = instantiate(compose(["model.generator.ngf=4"]).model.generator)
    with pytest.raises(Pix2PixError) as err:
        mapping.pairs(pub, wider)
    assert "model.model.0.weight has shape (2, 3, 4, 4)" in str(err.value) and "model.generator.ngf=2" in str(err.value)
    resnet = instantiate(compose(["model/generator=resnet_6blocks", "model.generator.ngf=2"]).model.generator)
    with pytest.raises(Pix2PixError, match="holds a unet_256 generator.*use model/generator=unet_256"):
        mapping.pairs(pub, resnet)
    ours = instantiate(compose([item for item in pub.implied]).model.generator)
    up7 = "model.model.1.model.3.model.3.model.3.model.3.model.3.model.5.weight"
    swapped = dataclasses.replace(pub, shapes={**pub.shapes, up7: pub.shapes[up7][1::-1] + pub.shapes[up7][2:]})
    with pytest.raises(Pix2PixError, match=r"transposed convolution's weight is \(in, out, kh, kw\)"):
        mapping.pairs(swapped, ours)
    extra = dataclasses.replace(pub, shapes={**pub.shapes, "model.extra.weight": (1,)})
    with pytest.raises(Pix2PixError, match="holds model.extra.weight, which the model config's network lacks"):
        mapping.pairs(extra, ours)


def test_a_discriminator_where_a_generator_belongs_says_where_it_goes():
    with pytest.raises(
        Pix2PixError, match="holds a basic discriminator, not a generator: pass it as model.init_from_D"
    ):
        published.describe(FIXTURES / "basic_d.zip.pth", "G")
    with pytest.raises(Pix2PixError, match="holds no discriminator"):
        published.describe(FIXTURES / "Generator_200.ckpt", "D")


def test_a_received_checkpoint_can_only_imply_model_keys(tmp_path):
    assert published.check_implied(tmp_path, ["model.generator.ngf=64", "dataset.direction=BtoA"])
    for bad in ("paths.output_dir=/etc", "model.generator._target_=os.system", "model.norm=${oc.env:HOME}"):
        with pytest.raises(Pix2PixError, match="which no conversion writes"):
            published.check_implied(tmp_path, [bad])


def test_checkpoint_shapes_are_read_without_mindspore_tensors(tmp_path):
    shapes = checkpoint.read_shapes(FIXTURES / "Generator_200.ckpt")
    assert shapes["optimizerG.netG.model.model.0.weight"] == (2, 3, 4, 4)
    assert shapes["loss_netG.netG.model.model.1.model.2.moving_mean"] == (4,)
    assert len(shapes) == 68


def test_load_generator_takes_a_published_file():
    translate = load_generator(FIXTURES / "unet_256.legacy.pth", mode="deterministic")
    out = translate.generate(REFERENCE["x256"].astype(np.float32))[:, :, ::2, ::2]
    assert np.abs(out - REFERENCE["unet_256"]).max() <= PARITY * np.abs(REFERENCE["unet_256"]).max()


def fake_torch_zip(path: Path, views: dict, numel: int, monkeypatch, compress: int = zipfile.ZIP_STORED) -> Path:
    """A zip-format torch file written without torch: one float32 storage of `numel` elements and tensors that
    are views of it, (offset, size, stride) each, pickled as torch.save pickles them."""
    fake_utils = types.ModuleType("torch._utils")
    fake_torch = types.ModuleType("torch")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called here")

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, FloatStorage.__module__ = "torch._utils", "torch"
    _rebuild_tensor_v2.__qualname__, FloatStorage.__qualname__ = "_rebuild_tensor_v2", "FloatStorage"
    fake_utils._rebuild_tensor_v2, fake_torch.FloatStorage = _rebuild_tensor_v2, FloatStorage
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class View:
        def __init__(self, offset, size, stride):
            self.args = (offset, size, stride)

        def __reduce__(self):
            return _rebuild_tensor_v2, (STORAGE, *self.args, False, collections.OrderedDict())

    STORAGE = object()

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", numel) if obj is STORAGE else None

    buffer = io.BytesIO()
    Writer(buffer, protocol=2).dump(collections.OrderedDict((k, View(*v)) for k, v in views.items()))
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(numel, dtype=np.float32).tobytes())
    return path


def test_views_outside_their_storage_are_refused(tmp_path, monkeypatch):
    good = fake_torch_zip(tmp_path / "good.pth", {"w": (2, (2, 3), (3, 1)), "t": (0, (3, 2), (1, 3))}, 12, monkeypatch)
    obj = read_torch_file(good)
    np.testing.assert_array_equal(obj["w"], np.arange(2, 8, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(obj["t"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    for name, view, expected in (
        ("negative_offset", (-10, (10, 10), (1, 10)), "negative"),
        ("negative_stride", (11, (4,), (-1,)), "negative"),
        ("zero_stride", (0, (3000, 3000), (0, 0)), "outside storage"),
        ("too_far", (0, (4, 4), (4, 1)), "outside storage"),
    ):
        path = fake_torch_zip(tmp_path / f"{name}.pth", {"w": view}, 12, monkeypatch)
        with pytest.raises(Pix2PixError, match=f"not a readable PyTorch file.*{expected}"):
            read_torch_file(path, read_tensors=False)  # refused before any tensor is read
    squeezed = fake_torch_zip(tmp_path / "deflated.pth", {"w": (0, (12,), (1,))}, 12, monkeypatch, zipfile.ZIP_DEFLATED)
    with pytest.raises(Pix2PixError, match="compressed; torch.save writes its entries uncompressed"):
        read_torch_file(squeezed)


def test_pickles_that_would_allocate_or_build_are_refused(tmp_path):
    cases = {
        "memo": (b"\x80\x02}r" + (2**31).to_bytes(4, "little") + b".", "memo index"),
        "build": (
            b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__K\x05\x85s\x86b.",
            "state for a rebuild function",
        ),  # fmt: skip
        "inst": (b"\x80\x02(i__builtin__\nobject\n.", "opcode INST"),
        "bytes8": (b"\x80\x04\x8e" + (2**60).to_bytes(8, "little") + b".", "not a readable PyTorch file"),
    }
    for name, (payload, expected) in cases.items():
        with pytest.raises(Pix2PixError, match=expected):
            read_torch_file(hostile_zip(tmp_path / f"{name}.pth", payload))
    assert read_torch_file.__module__ == "pix2pix.weights.torchfile"  # and our functions kept their defaults
    from pix2pix.weights.torchfile import _rebuild_parameter

    assert _rebuild_parameter.__defaults__ == (False, None)


def test_a_command_line_choice_beats_what_the_file_implies(tmp_path):
    named = tmp_path / "facades_label2photo_pretrained" / "latest_net_G.pth"
    named.parent.mkdir()
    named.write_bytes((FIXTURES / "unet_256.zip.pth").read_bytes())
    for extra, direction in (([], "BtoA"), (["dataset=maps"], "AtoB")):  # a chosen dataset keeps its direction
        overrides = ["task=predict", f"ckpt={named}", *extra]
        run = resolve_trained_run(compose(overrides), overrides)
        assert run.cfg.dataset.direction == direction
        assert run.cfg.model.generator.ngf == 2 and run.cfg.model.generator.num_downs == 8
    overrides = ["task=predict", f"ckpt={named}", "model.generator.use_dropout=false"]
    assert resolve_trained_run(compose(overrides), overrides).cfg.model.generator.use_dropout is False


def test_a_conversion_records_what_the_networks_were_built_with():
    pub = published.describe(FIXTURES / "unet_256.zip.pth")
    overrides = ["task=convert", "model.generator.use_dropout=false"]
    cfg = apply_implied(compose(overrides), list(pub.implied), overrides)
    recorded = recorded_overrides(cfg, [pub], overrides)
    assert "model.generator.use_dropout=false" in recorded and "model.generator.ngf=2" in recorded
    assert published.check_implied(FIXTURES, recorded) == recorded


def test_a_converted_checkpoint_cannot_claim_other_widths_or_be_resumed(tmp_path):
    weight = ms.Parameter(ms.Tensor(np.zeros((2, 3, 4, 4), np.float32)), name="G.down.0.weight")
    for ngf, name in ((2, "honest.ckpt"), (4096, "inflated.ckpt")):
        meta = {published.IMPLIED_META: f"model/generator=unet_256 model.generator.ngf={ngf}"}
        checkpoint.save(tmp_path / name, {"G.down.0.weight": weight}, meta)
    assert "model.generator.ngf=2" in published.implied_config(tmp_path / "honest.ckpt")[0]
    with pytest.raises(Pix2PixError, match="ngf=4096, and its first G layer disagrees"):
        published.implied_config(tmp_path / "inflated.ckpt")
    with pytest.raises(Pix2PixError, match="converted weights, .* use model.init_from="):
        refuse_published_resume("honest.ckpt", tmp_path / "honest.ckpt")


def test_a_cut_download_says_so(tmp_path):
    cut = tmp_path / "Generator_200.ckpt"
    cut.write_bytes((FIXTURES / "Generator_200.ckpt").read_bytes()[:100_000])
    with pytest.raises(Pix2PixError, match=r"Generator_200\.ckpt: not a readable MindSpore checkpoint .*cut short"):
        published.describe(cut)


def test_a_conversion_never_writes_over_a_file(tmp_path):
    weight = ms.Parameter(ms.Tensor(np.ones((2, 3, 4, 4), np.float32)), name="G.down.0.weight")
    target = tmp_path / "facades.ckpt"
    target.write_bytes(b"someone else's")
    with pytest.raises(Pix2PixError, match="facades.ckpt: already exists; choose another file name"):
        checkpoint.save(target, {"G.down.0.weight": weight}, {}, replace=False)
    assert target.read_bytes() == b"someone else's" and list(tmp_path.iterdir()) == [target]


def test_fine_tuning_from_a_mismatched_file_names_the_tensor_and_the_fit(compose_cfg):
    from pix2pix.tasks.train import build_train_step, init_networks

    cfg = compose_cfg(f"model.init_from={FIXTURES / 'unet_256.legacy.pth'}", "model.generator.ngf=4")
    with pytest.raises(Pix2PixError, match=r"model\.model\.0\.weight has shape \(2, 3, 4, 4\).*ngf=2"):
        init_networks(cfg.model, build_train_step(cfg))

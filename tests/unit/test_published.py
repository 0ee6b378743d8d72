"""Published weights: PyTorch files read without PyTorch (and nothing in them run), the name tables, the
networks they imply, and parity with the original networks (tests/fixtures/published, made once with torch)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from hydra.utils import instantiate

from pix2pix import checkpoint
from pix2pix.api import load_generator
from pix2pix.config.compose import compose
from pix2pix.errors import Pix2PixError
from pix2pix.weights import published
from pix2pix.weights.names import name_hint, tables
from pix2pix.weights.torchfile import RefusedPickle, read_torch_file

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "published"
REFERENCE = np.load(FIXTURES / "reference.npz")
PARITY = 1e-4  # of the output scale (max |reference output|)

# file, role, input, reference output: every format, and every kind of network the tables know
CASES = [
    ("unet_256.zip.pth", "G", "x256", "unet_256"),
    ("unet_256.legacy.pth", "G", "x256", "unet_256"),
    ("unet_256.mmagic.pth", "G", "x256", "mmagic_g"),
    ("Generator_200.ckpt", "G", "x256", "modelzoo_g"),
    ("resnet_6blocks.zip.pth", "G", "x64", "resnet_6blocks"),
    ("unet_128_instance.legacy.pth", "G", "x128", "unet_128_instance"),
    ("basic_d.zip.pth", "D", "ab64", "basic_d"),
    ("basic_d.legacy.pth", "D", "ab64", "basic_d"),
    ("unet_256.mmagic.pth", "D", "ab64", "mmagic_d"),
    ("pixel_d.zip.pth", "D", "ab64", "pixel_d"),
]


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
    published.load_into(net, FIXTURES / name, role)
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
    set_weights(net, published.weights_for(dataclasses.replace(mmagic, bgr=False), net))
    assert np.abs(deterministic_output(net, REFERENCE["x256"]) - REFERENCE["mmagic_g"]).max() > 100 * PARITY

    zoo = published.describe(FIXTURES / "Generator_200.ckpt")
    net = network_for(zoo)
    arrays = published.weights_for(zoo, net)
    up1 = [name for name, kind, _ in published.weighted_cells(net) if kind == "deconv"][-1]
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


def test_the_tables_name_every_weighted_layer_of_our_networks_at_the_published_width():
    for role, group in (("G", "generator"), ("D", "discriminator")):
        for table in tables(role):
            cfg = compose([item for item in table.overrides])
            cells = published.weighted_cells(instantiate(cfg.model[group]))
            assert [kind for _, kind, _ in cells] == [row.kind for row in table.rows], table.network
            for (_, kind, cell), row in zip(cells, table.rows):
                shape = tuple(cell.weight.shape) if kind != "norm" else tuple(cell.gamma.shape)
                assert shape == row.shape, (table.network, row.layer)
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
        published.pairs(pub, wider)
    assert "model.model.0.weight has shape (2, 3, 4, 4)" in str(err.value) and "model.generator.ngf=2" in str(err.value)
    resnet = instantiate(compose(["model/generator=resnet_6blocks", "model.generator.ngf=2"]).model.generator)
    with pytest.raises(Pix2PixError, match="holds a unet_256 generator.*use model/generator=unet_256"):
        published.pairs(pub, resnet)
    ours = instantiate(compose([item for item in pub.implied]).model.generator)
    up7 = "model.model.1.model.3.model.3.model.3.model.3.model.3.model.5.weight"
    swapped = dataclasses.replace(pub, shapes={**pub.shapes, up7: pub.shapes[up7][1::-1] + pub.shapes[up7][2:]})
    with pytest.raises(Pix2PixError, match=r"transposed convolution's weight is \(in, out, kh, kw\)"):
        published.pairs(swapped, ours)
    extra = dataclasses.replace(pub, shapes={**pub.shapes, "model.extra.weight": (1,)})
    with pytest.raises(Pix2PixError, match="holds model.extra.weight, which the model config's network lacks"):
        published.pairs(extra, ours)


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

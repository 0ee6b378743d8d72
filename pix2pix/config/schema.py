"""The types of the config's keys, as Hydra structured configs (the ConfigStore's `schema` group).

The YAML files under conf/ hold the values and say what each key means; these dataclasses hold
only the types (every field MISSING), so that Hydra itself refuses `dataset.crop_size=abc` or
`eval.num_images=all` while composing. Groups whose options are a class's constructor arguments
(model, optimizer, schedule) are typed by their defaults instead, and flags must be written true or
false, which OmegaConf alone would not ask (both in config.checks.check_value_types).

No `from __future__ import annotations` here: OmegaConf reads these annotations at run time, and
`Optional[int]` is what Python 3.9 can evaluate.
"""

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class AlignedDataSchema:
    _target_: str = MISSING
    name: str = MISSING
    root: str = MISSING
    direction: str = MISSING
    load_size: Any = MISSING  # 256 or [height, width]: pix2pix.data.sizes.height_width checks it
    crop_size: Any = MISSING
    preprocess: str = MISSING
    fit: str = MISSING
    batch_size: int = MISSING
    flip: bool = MISSING
    train_split: str = MISSING
    val_split: str = MISSING
    train_data_dir: Optional[str] = MISSING
    val_data_dir: Optional[str] = MISSING
    dataset_size: Optional[int] = MISSING
    num_val_samples: int = MISSING
    seed: int = MISSING
    url: Optional[str] = MISSING
    sha256: Optional[str] = MISSING
    download: bool = MISSING
    download_note: Optional[str] = MISSING


@dataclass
class SyntheticDataSchema(AlignedDataSchema):
    image_size: int = MISSING
    num_train: int = MISSING
    num_val: int = MISSING
    generator_seed: int = MISSING


@dataclass
class DeviceSchema:
    target: str = MISSING
    device_id: int = MISSING
    mode: str = MISSING
    save_graphs: bool = MISSING


@dataclass
class ParallelSchema:
    device_num: int = MISSING
    nodes: int = MISSING
    node_rank: int = MISSING
    master_addr: str = MISSING
    master_port: Optional[int] = MISSING
    cluster_timeout: int = MISSING
    sync_bn: bool = MISSING
    nccl_library: Optional[str] = MISSING


@dataclass
class DataSchema:
    max_pixels: int = MISSING


@dataclass
class LoggingSchema:
    progress_bar: bool = MISSING


@dataclass
class LossScaleSchema:
    initial: float = MISSING
    factor: float = MISSING
    window: int = MISSING


@dataclass
class CheckpointSchema:
    every: int = MISSING
    keep_last: Optional[int] = MISSING
    resume: str = MISSING


@dataclass
class FidSchema:
    weights: Optional[str] = MISSING
    batch_size: int = MISSING
    cache: bool = MISSING


@dataclass
class ValSchema:
    mode: str = MISSING
    num_images: Optional[int] = MISSING
    every: int = MISSING
    fid: bool = MISSING


@dataclass
class EvalSchema:
    split: str = MISSING
    mode: str = MISSING
    num_images: Optional[int] = MISSING
    fid: Any = MISSING  # auto, true or false (checked by config.checks.validate)


@dataclass
class PredictSchema:
    input: Optional[str] = MISSING
    output: str = MISSING
    fit: str = MISSING
    mode: str = MISSING


@dataclass
class ExportSchema:
    format: str = MISSING
    file_name: str = MISSING
    tolerance: float = MISSING


@dataclass
class ConvertSchema:
    input: Optional[str] = MISSING
    discriminator: Optional[str] = MISSING
    output: Optional[str] = MISSING


@dataclass
class BenchmarkSchema:
    warmup_steps: int = MISSING
    steps: int = MISSING


@dataclass
class InspectSchema:
    num_preview: int = MISSING


@dataclass
class CombineSchema:
    a: Optional[str] = MISSING
    b: Optional[str] = MISSING
    output: Optional[str] = MISSING


@dataclass
class FaultsSchema:
    nan_at_step: Optional[int] = MISSING
    overflow_at_step: Optional[int] = MISSING
    kill_at_step: Optional[int] = MISSING
    kill_in_save: Optional[int] = MISSING
    signal_at_step: Optional[int] = MISSING
    signal_name: str = MISSING
    signal_times: int = MISSING
    rank: int = MISSING


# The name each is stored under (the configs use it as /schema/NAME@PACKAGE).
SCHEMAS = {
    "aligned_data": AlignedDataSchema,
    "synthetic_data": SyntheticDataSchema,
    "device": DeviceSchema,
    "parallel": ParallelSchema,
    "data": DataSchema,
    "logging": LoggingSchema,
    "loss_scale": LossScaleSchema,
    "checkpoint": CheckpointSchema,
    "fid": FidSchema,
    "val": ValSchema,
    "eval": EvalSchema,
    "predict": PredictSchema,
    "export": ExportSchema,
    "convert": ConvertSchema,
    "benchmark": BenchmarkSchema,
    "inspect": InspectSchema,
    "combine": CombineSchema,
    "faults": FaultsSchema,
}


def register_schemas() -> None:
    """Put the schemas into Hydra's ConfigStore (the configs name them as /schema/NAME)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)

"""Config helpers: OmegaConf resolvers, command-line checks and cross-key validation."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pix2pix.data.images import PILLOW_PIXEL_LIMIT
from pix2pix.errors import Pix2PixError
from pix2pix.runs import (
    TRAINED_RUN_TASKS,
    check_not_busy,
    hydra_record_dir,
    open_trained_run,
    owns_the_run,
    task_output_dir,
    uses_trained_run,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

DATA_TASKS = ("download", "inspect", "combine")  # no network involved: model settings are not checked
TASKS = ("train", *TRAINED_RUN_TASKS, "benchmark", *DATA_TASKS)
VAL_MODES = ("paper", "deterministic")
PREDICT_FITS = ("resize", "pad")
EXPORT_FORMATS = ("MINDIR", "ONNX", "AIR")
# What a training run returns to a sweeper (metrics.json keys; L1 lower is better, PSNR and SSIM higher).
OPTIMIZED_METRICS = ("val_L1", "val_psnr", "val_ssim")
CHOICES = {
    "val.mode": VAL_MODES,
    "eval.mode": VAL_MODES,
    "predict.fit": PREDICT_FITS,
    "export.format": EXPORT_FORMATS,
    "optimized_metric": OPTIMIZED_METRICS,
    "checkpoint.resume": ("exact", "next_epoch"),
}


def register_resolvers() -> None:
    """`${add:a,b}` sums numbers (D's input channels, epoch_num); `${task_dir:task,ckpt,default}`
    puts eval/predict/export of a run into `<run>/<task>` (see pix2pix.runs.task_output_dir)."""
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("task_dir"):
        OmegaConf.register_new_resolver("task_dir", task_output_dir)
    if not OmegaConf.has_resolver("record_dir"):
        OmegaConf.register_new_resolver("record_dir", hydra_record_dir)


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_overrides(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config once with the command-line overrides, turning Hydra's
    multi-line composition errors into one Pix2PixError that names the key and the fix.
    Sweeps (`-m a=1,2`) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    choices = []  # the group selections, which set the defaults the values are checked against
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+~")
        group = key.replace(".", "/")
        if not sep or key.startswith("hydra") or not (conf_dir / group).is_dir():
            continue
        if "." in key:
            raise Pix2PixError(f"{key}={value}: {key} is a config group; choose its option with {group}={value}")
        options = group_options(group, conf_dir)
        if value not in (*options, "null", "") and "," not in value:
            raise Pix2PixError(f"{key}={value}: no such option; choose one of {', '.join(options)}")
        choices.append(item)
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
            check_value_types(cfg, compose(config_name="config", overrides=choices), overrides)
            if uses_trained_run(cfg.task, cfg.ckpt):
                run = open_trained_run(cfg, overrides)
                if cfg.task == "train" and run.folder is not None and not run.forked and owns_the_run():
                    check_not_busy(run.folder)
                cfg = run.cfg
            for group in ("dataset", "model", "optimizer", "schedule", "device", "parallel"):
                OmegaConf.to_container(cfg[group], resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise Pix2PixError(f"{err.full_key} must be set: add {err.full_key}=VALUE to the command line") from None
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0]
        if "hydra/sweeper" in str(err) or "hydra/launcher" in str(err):
            raise Pix2PixError(
                f"{first}; the Optuna sweeper and the joblib launcher come with the sweep extra: "
                "pip install -e '.[sweep]'"
            ) from None
        if "not in struct" in str(err) or "Could not override" in str(err):
            key = next((o.partition("=")[0] for o in overrides if o.partition("=")[0] in first), None)
            hint = f"'{key}' is not a config key" if key else first
            raise Pix2PixError(
                f"{hint}; check its spelling (python launch.py --cfg job lists every key), "
                "or prefix it with + to add a new key"
            ) from None
        raise Pix2PixError(f"bad command line: {first}") from None
    validate(cfg)


EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}


def check_value_types(cfg: DictConfig, defaults: DictConfig, overrides: list[str]) -> None:
    """An override of a number or a flag must keep its type (`dataset.crop_size=abc` is refused)."""
    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        try:
            default = OmegaConf.select(defaults, key, default=None, throw_on_missing=False)
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException:  # an interpolation only Hydra's run can resolve: no fixed type
            continue
        kind = type(default)
        if kind not in EXPECTED or value is None:
            continue
        if kind is bool:
            ok = isinstance(value, bool)
        else:  # an int is a fine float; a bool is neither
            ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        if not ok:
            raise Pix2PixError(f"{item}: {key} must be {EXPECTED[kind]} (default {default})")


def validate_parallel(par: DictConfig) -> None:
    """The parallel group: devices spread evenly over the nodes, a port for several nodes."""
    for key in ("device_num", "nodes"):
        if par[key] < 1:
            raise Pix2PixError(f"parallel.{key}={par[key]}: use 1 or more")
    if par.device_num % par.nodes:
        raise Pix2PixError(
            f"parallel.device_num={par.device_num} does not divide over parallel.nodes={par.nodes}: every node "
            "runs the same number of workers; use a multiple of the node count"
        )
    if not 0 <= par.node_rank < par.nodes:
        raise Pix2PixError(f"parallel.node_rank={par.node_rank}: use 0 .. {par.nodes - 1} (parallel.nodes={par.nodes})")
    if par.nodes > 1 and not par.master_port:
        raise Pix2PixError(
            f"parallel.nodes={par.nodes}: set parallel.master_port (and parallel.master_addr, node 0's address) "
            "to the same free port on every node, e.g. parallel.master_port=8118"
        )


def validate(cfg: DictConfig) -> None:
    """Checks that span several keys, made before anything heavy starts."""
    if cfg.task not in TASKS:
        raise Pix2PixError(f"task={cfg.task}: no such task; use one of {', '.join(TASKS)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise Pix2PixError(f"{key}={value}: use one of {', '.join(allowed)}")
    if cfg.task in ("train", "benchmark"):
        validate_parallel(cfg.parallel)
    if cfg.model.get("norm") == "sync_batch":
        raise Pix2PixError(
            "model.norm=sync_batch is what parallel.sync_bn=true makes of model.norm=batch in a data-parallel job; "
            "use model.norm=batch (with parallel.sync_bn=true)"
        )
    max_pixels = cfg.data.max_pixels
    if not 1 <= max_pixels <= PILLOW_PIXEL_LIMIT:
        raise Pix2PixError(
            f"data.max_pixels={max_pixels}: use 1 to {PILLOW_PIXEL_LIMIT} (Pillow refuses larger images itself)"
        )
    keep_last = cfg.checkpoint.get("keep_last")
    if keep_last is not None and keep_last < 1:
        raise Pix2PixError(f"checkpoint.keep_last={keep_last}: use 1 or more, or null to keep every epoch_NNN.ckpt")
    if cfg.task in DATA_TASKS:
        return
    data, gen = cfg.dataset, cfg.model.generator
    if data.crop_size > data.load_size:
        raise Pix2PixError(
            f"dataset.crop_size={data.crop_size} is larger than dataset.load_size={data.load_size}; "
            "set dataset.crop_size <= dataset.load_size"
        )
    if "num_downs" in gen:
        side = 2**gen.num_downs
        if data.crop_size % side:
            raise Pix2PixError(
                f"model.generator.num_downs={gen.num_downs} halves the image {gen.num_downs} times, so "
                f"dataset.crop_size must be a multiple of {side} (it is {data.crop_size}); use "
                f"dataset.crop_size={max(side, data.crop_size // side * side)} or a U-Net of another depth "
                "(model/generator=unet_128 for 128)"
            )
    elif data.crop_size % 4:
        raise Pix2PixError(f"dataset.crop_size={data.crop_size}: the ResNet generator needs a multiple of 4")
    disc = cfg.model.discriminator
    if "n_layers" in disc:
        smallest = 3 * 2**disc.n_layers  # n stride-2 convs, then two stride-1 convs
        if data.crop_size < smallest:
            raise Pix2PixError(
                f"model.discriminator.n_layers={disc.n_layers} needs dataset.crop_size >= {smallest} "
                f"(it is {data.crop_size}); lower n_layers or raise crop_size"
            )

"""The checks made before anything heavy starts: the command line against the config, and the rules
that span several keys (each written once, here)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pix2pix.choices import CHOICES, DATA_TASKS, check_choice, check_task
from pix2pix.config.compose import CONF_DIR, compose, group_options
from pix2pix.config.implied import resolve_trained_run
from pix2pix.data.images import PILLOW_PIXEL_LIMIT
from pix2pix.data.preprocess import Preprocess
from pix2pix.data.sizes import SIZE_KEYS, check_network_sizes, check_sizes
from pix2pix.errors import Pix2PixError
from pix2pix.runs import (
    check_not_busy,
    override_key,
    owns_the_run,
    uses_trained_run,
)


def check_overrides(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config once with the command-line overrides, turning Hydra's
    multi-line composition errors into one Pix2PixError that names the key and the fix.
    Sweeps (`-m a=1,2`) are left to Hydra."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

    choices = [item for item in overrides if check_group_choice(item, conf_dir)]
    try:
        defaults = compose(choices, conf_dir)  # the options chosen, before any key=value
        cfg = compose(overrides, conf_dir)
        check_value_types(defaults, overrides)
        if uses_trained_run(cfg.task, cfg.ckpt):
            run = resolve_trained_run(cfg, overrides)
            if cfg.task == "train" and run.folder is not None and not run.forked and owns_the_run():
                check_not_busy(run.folder)
            cfg = run.cfg
        for group in ("dataset", "model", "optimizer", "schedule", "device", "parallel"):
            OmegaConf.to_container(cfg[group], resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise Pix2PixError(f"{err.full_key} must be set: add {err.full_key}=VALUE to the command line") from None
    except MissingConfigException as err:
        first = str(err).strip().splitlines()[0]
        if (err.missing_cfg_file or "").startswith(("hydra/sweeper", "hydra/launcher")):
            raise Pix2PixError(
                f"{first}; the Optuna sweeper and the joblib launcher come with the sweep extra: "
                "pip install -e '.[sweep]'"
            ) from None
        raise Pix2PixError(f"bad command line: {first}") from None
    except ConfigCompositionException as err:
        if isinstance(err.__cause__, ValidationError) and err.__cause__.full_key:  # refused by a schema's type
            raise Pix2PixError(wrong_type(err.__cause__.full_key, defaults, overrides)) from None
        if isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)):  # an override of no such key
            raise Pix2PixError(no_such_key(err.__cause__.full_key, overrides, conf_dir)) from None
        raise Pix2PixError(f"bad command line: {str(err).strip().splitlines()[0]}") from None
    except (HydraException, OmegaConfBaseException) as err:
        raise Pix2PixError(f"bad command line: {str(err).strip().splitlines()[0]}") from None
    validate(cfg)


def no_such_key(missing: str, overrides: list[str], conf_dir: Path) -> str:
    """The line for an override of a key the composed config lacks: which option brings it, when what is
    missing is a whole block another option brings (`eval` under task=predict), else a misspelt key."""
    keys = [override_key(o) for o in overrides]
    key = next((k for k in keys if k == missing or k.startswith(f"{missing}.")), missing)
    block = missing if "." not in missing else None  # None: the block is there, the key in it is not
    if block == "fault":
        return f"{key}: the fault.* keys (the tests' fault injection) come with debug=faults; add debug=faults"
    task = next((o.partition("=")[2] for o in overrides if o.startswith("task=")), "train")
    owner = next((t for t in group_options("task", conf_dir) if block in task_blocks(t, conf_dir)), None)
    if owner:
        return f"{key}: a key of task={owner} only, and this command line runs task={task}; drop it"
    return (
        f"'{key}' is not a config key; check its spelling (python launch.py --cfg job lists every key), "
        "or prefix it with + to add a new key"
    )


def task_blocks(task: str, conf_dir: Path) -> set[str]:
    """The top-level keys conf/task/TASK.yaml brings (eval, predict, checkpoint, ...)."""
    return set(OmegaConf.load(conf_dir / "task" / f"{task}.yaml")) - {"defaults", "task"}


def check_group_choice(item: str, conf_dir: Path) -> bool:
    """Whether `item` chooses a config group's option (`dataset=facades`); one line when the option does not
    exist (a sweep's `a,b` is left to Hydra)."""
    key, sep, value = item.partition("=")
    key = key.lstrip("+~")
    group = key.replace(".", "/")
    if not sep or key.startswith("hydra") or not (conf_dir / group).is_dir():
        return False
    if "." in key:
        raise Pix2PixError(f"{key}={value}: {key} is a config group; choose its option with {group}={value}")
    options = group_options(group, conf_dir)
    if value not in (*options, "null", "") and "," not in value:
        if key == "task":
            check_task(value)
        raise Pix2PixError(f"{key}={value}: no such option; choose one of {', '.join(options)}")
    return True


EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}


def wrong_type(key: str, defaults: DictConfig, overrides: list[str]) -> str:
    """The line for an override that a schema (pix2pix.config.schema) refused: the type the key takes."""
    item = next((o for o in overrides if override_key(o) == key), key)
    parent, _, leaf = key.rpartition(".")
    # The node's declared type and whether it may be null: OmegaConf keeps them in the node's metadata.
    node = (OmegaConf.select(defaults, parent) if parent else defaults)._get_node(leaf)
    kind = {**EXPECTED, str: "a string"}.get(node._metadata.ref_type, "of another type")
    optional = " or null" if node._metadata.optional else ""
    return f"{item}: {key} must be {kind}{optional} (default {as_yaml(node._value())})"


def as_yaml(value: object) -> str:
    """A default as the config files write it: true, null, 256."""
    return OmegaConf.to_yaml({"v": value}).strip()[3:]


def check_value_types(defaults: DictConfig, overrides: list[str]) -> None:
    """An override of a number or a flag keeps its default's type, as the command line writes it: the keys
    no schema types (the model, optimizer and schedule groups' constructor arguments: `model.lambda_L1=lots`),
    and the flags a schema would convert (`dataset.flip=yes` is not `true`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for item in overrides:
        override = parser.parse_override(item)
        if override.is_sweep_override() or override.is_delete():
            continue
        key, value = override.key_or_group, override.value()
        if key in SIZE_KEYS:  # 256 or [256, 512]: sizes.height_width checks them, in validate
            continue
        try:
            default = OmegaConf.select(defaults, key, default=None, throw_on_missing=False)
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
            raise Pix2PixError(f"{item}: {key} must be {EXPECTED[kind]} (default {as_yaml(default)})")


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
    check_task(cfg.task)  # a config from elsewhere (the API, a sweep) may name any task
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None or key == "optimized_metric":  # a task's block is there only for that task
            check_choice(key, value, allowed)
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
    for key, ok, rule in (
        ("initial", lambda v: v >= 1, ">= 1"),
        ("factor", lambda v: v > 1, "> 1"),
        ("window", lambda v: v >= 1, ">= 1"),
    ):
        value = OmegaConf.select(cfg, f"loss_scale.{key}", default=None)
        if value is not None and not ok(value):
            raise Pix2PixError(f"loss_scale.{key}={value}: use a value {rule}")
    for key in ("val.every", "fid.batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < (0 if key == "val.every" else 1):
            raise Pix2PixError(f"{key}={value}: use {'0 (off) or more' if key == 'val.every' else '1 or more'}")
    if cfg.optimized_metric == "val_fid" and cfg.task == "train" and not OmegaConf.select(cfg, "val.fid"):
        raise Pix2PixError("optimized_metric=val_fid: the run computes FID only with val.fid=true; add val.fid=true")
    keep_last = OmegaConf.select(cfg, "checkpoint.keep_last", default=None)
    if keep_last is not None and keep_last < 1:
        raise Pix2PixError(f"checkpoint.keep_last={keep_last}: use 1 or more, or null to keep every epoch_NNN.ckpt")
    if cfg.task in DATA_TASKS:
        return
    for key in ("model.init_from", "model.init_from_D"):
        value = OmegaConf.select(cfg, key, default=None)
        if value and cfg.task == "train" and not Path(value).expanduser().exists():
            raise Pix2PixError(f"{key}={value}: no such weights file or run folder")
    data = cfg.dataset
    Preprocess(data.get("preprocess", "resize_and_crop"), fit=data.get("fit", "pad"))  # one line for a bad mode
    check_sizes(data.load_size, data.crop_size, data.get("preprocess", "resize_and_crop"))
    check_network_sizes(data.crop_size, cfg.model.generator, cfg.model.discriminator)

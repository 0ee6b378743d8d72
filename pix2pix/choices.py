"""Every enumeration a config key or an API argument chooses from, in one place (no MindSpore here)."""

from __future__ import annotations

from pix2pix.errors import Pix2PixError

TRAINED_RUN_TASKS = ("eval", "predict", "export")  # work from a trained run (ckpt=)
DATA_TASKS = ("download", "inspect", "combine")  # no network involved: model settings are not checked
TASKS = ("train", *TRAINED_RUN_TASKS, "convert", "benchmark", *DATA_TASKS)
DATASET_DIRECTIONS = ("AtoB", "BtoA")  # which half of an aligned pair is G's input: the left (AtoB) or the right
# The networks' own choices (model.*); sync_batch: BatchNorm over all devices (set by parallel.sync_bn=true).
NORMS = ("batch", "instance", "none", "sync_batch")
PAD_MODES = ("CONSTANT", "REFLECT")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
GAN_MODES = ("vanilla", "lsgan")
DEVICES = ("auto", "cpu", "gpu", "ascend")
EXECUTION_MODES = ("graph", "pynative")  # device.mode: MindSpore's GRAPH_MODE or PYNATIVE_MODE
VAL_MODES = ("paper", "deterministic")
AMP_LEVELS = ("O0", "O1", "O2", "O3")  # amp: MindSpore's mixed-precision levels (O0: float32 throughout)
PREDICT_FITS = ("resize", "pad")
EXPORT_FORMATS = ("MINDIR", "ONNX", "AIR")
RESUME_MODES = ("exact", "next_epoch")
# What a training run returns to a sweeper (metrics.json keys; L1 and FID lower is better, PSNR and SSIM higher).
OPTIMIZED_METRICS = ("val_L1", "val_psnr", "val_ssim", "val_fid")
EVAL_FID = ("auto", True, False)  # eval.fid: when the Inception weights are installed, always (required), never

# The config keys that take one of these, checked by pix2pix.config.checks.validate where present.
CHOICES = {
    "val.mode": VAL_MODES,
    "eval.mode": VAL_MODES,
    "predict.mode": VAL_MODES,
    "predict.fit": PREDICT_FITS,
    "export.format": EXPORT_FORMATS,
    "optimized_metric": OPTIMIZED_METRICS,
    "checkpoint.resume": RESUME_MODES,
    "amp": AMP_LEVELS,
    "eval.fid": EVAL_FID,
}


def check_task(task: str) -> None:
    """One line naming the tasks when `task` is none of them (`task=evaluate`)."""
    if task not in TASKS:
        raise Pix2PixError(f"task={task}: no such task; use one of {', '.join(TASKS)}")


def check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    """One line naming the key and its choices when `value` is not one of them."""
    if not any(value == choice and type(value) is type(choice) for choice in allowed):  # eval.fid=0 is not false
        names = (str(choice).lower() if isinstance(choice, bool) else choice for choice in allowed)
        raise Pix2PixError(f"{key}={value}: use one of {', '.join(names)}")

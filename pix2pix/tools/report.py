"""Tables of finished runs and sweeps.

    python -m pix2pix.tools.report multirun/DATE/TIME [MORE_RUNS_OR_SWEEPS...] [--plot] [--metric val_L1]
    python -m pix2pix.tools.report --performance multirun/DATE/TIME

The first form prints one row per training run (its overrides, final validation L1, PSNR, SSIM,
final losses, ms/step) and writes report.md and report.csv (and with --plot report.png: the metric
against each swept value) beside the sweep, or into --out when several folders are given.
--performance turns benchmark.json files (task=benchmark) into the ModelZoo README's performance
tables, the published figures beside the measured ones, as performance.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from pix2pix.errors import Pix2PixError
from pix2pix.runs import find_run_files
from pix2pix.track.files import write_text

PUBLISHED = Path(__file__).with_name("published.yaml")
TRAIN_COLUMNS = (
    ("val_L1", "val L1", "{:.4f}"),
    ("val_psnr", "PSNR", "{:.2f}"),
    ("val_ssim", "SSIM", "{:.4f}"),
    ("val_fid", "FID", "{:.2f}"),  # FID and KID: runs with val.fid=true (the columns only where a run has them)
    ("val_kid", "KID", "{:.4f}"),
    ("final_loss_G_GAN", "G GAN", "{:.3f}"),
    ("final_loss_G_L1", "G L1", "{:.3f}"),
    ("final_loss_D_real", "D real", "{:.3f}"),
    ("final_loss_D_fake", "D fake", "{:.3f}"),
    ("ms_per_step", "ms/step", "{:.0f}"),
)


@dataclass
class Run:
    folder: Path
    overrides: list[str]
    results: dict  # metrics.json or benchmark.json


def find_runs(paths: list[Path], results_file: str) -> list[Run]:
    """Run folders holding `results_file` (and .hydra/overrides.yaml) at or below each path."""
    runs = []
    for path in paths:
        if path.is_file():
            raise SystemExit(f"error: {path}: a file; give the run or sweep folder that holds {results_file}")
    for folder, (results, *_) in find_run_files(paths, results_file).items():
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        runs.append(Run(folder, [str(o) for o in overrides], json.loads(results.read_text())))
    if not runs:
        hint = "task=benchmark" if results_file == "benchmark.json" else "finished training runs"
        raise SystemExit(f"error: no {results_file} under {', '.join(map(str, paths))} (are these {hint}?)")
    return runs


def swept_overrides(runs: list[Run]) -> list[list[str]]:
    """Each run's overrides that are not shared by every run (all of them for a single run)."""
    if len(runs) == 1:
        return [runs[0].overrides]
    common = set.intersection(*(set(r.overrides) for r in runs))
    return [[o for o in r.overrides if o not in common] for r in runs]


def run_label(run: Run, paths: list[Path]) -> str:
    for root in paths:
        if run.folder == root:
            return root.name
        if run.folder.is_relative_to(root):
            return str(run.folder.relative_to(root)) if len(paths) == 1 else str(run.folder.relative_to(root.parent))
    return str(run.folder)


OPTIONAL_COLUMNS = ("val_fid", "val_kid")
# task=eval's metrics.json (<run>/eval/<split>/): its figures under the training table's columns.
EVAL_KEYS = {"val_L1": "l1", "val_psnr": "psnr", "val_ssim": "ssim", "val_fid": "fid", "val_kid": "kid"}


def result(run: Run, key: str) -> object:
    if "split" in run.results and "checkpoint" in run.results:  # an eval of a split
        return run.results.get(EVAL_KEYS.get(key, key))
    return run.results.get(key)


def training_table(runs: list[Run], paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    columns = [
        column
        for column in TRAIN_COLUMNS
        if column[0] not in OPTIONAL_COLUMNS or any(result(run, column[0]) is not None for run in runs)
    ]
    header = ["run", "overrides", *(label for _, label, _ in columns)]
    rows = []
    for run, swept in zip(runs, swept_overrides(runs)):
        cells = [run_label(run, paths), " ".join(swept) or "(defaults)"]
        for key, _, fmt in columns:
            value = result(run, key)
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else "")
        rows.append(cells)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)]) + "\n"


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([header, *rows])
    return out.getvalue()


def swept_values(runs: list[Run]) -> dict[str, list[tuple[str, int]]]:
    """key -> [(value, run index)] for every key=value that differs between runs."""
    values: dict[str, list[tuple[str, int]]] = {}
    for i, swept in enumerate(swept_overrides(runs)):
        for item in swept:
            key, _, value = item.partition("=")
            values.setdefault(key, []).append((value, i))
    return values


def plot(runs: list[Run], metric: str, path: Path) -> Path:
    """One panel per swept key: `metric` against the key's values (log x when they span decades)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib: pip install -e '.[report]'") from None
    swept = swept_values(runs)
    if not swept:
        raise SystemExit("error: --plot needs runs that differ in some override (a sweep)")
    fig, axes = plt.subplots(1, len(swept), figsize=(4.5 * len(swept), 3.6), squeeze=False)
    for ax, (key, points) in zip(axes[0], sorted(swept.items())):
        ys = [runs[i].results.get(metric) for _, i in points]
        try:
            xs = [float(v) for v, _ in points]
            order = sorted(range(len(xs)), key=xs.__getitem__)
            ax.plot([xs[j] for j in order], [ys[j] for j in order], "o-")
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        except ValueError:  # categorical values
            labels = [v for v, _ in points]
            ax.plot(range(len(labels)), ys, "o")
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- performance tables --------------------------------------------------------------------

PERFORMANCE_ROWS = (
    "Model Version",
    "Resource",
    "MindSpore Version",
    "Dataset",
    "Training Parameters",
    "Optimizer",
    "Loss Function",
    "outputs",
    "Speed",
    "Total time",
    "Checkpoint for Fine tuning",
)
LOSS_FUNCTIONS = {
    "vanilla": "SigmoidCrossEntropyWithLogits Loss & L1 Loss",
    "lsgan": "MSE Loss & L1 Loss",
}


def devices_label(n: int, backend: str) -> str:
    return f"{n}pc({backend})"


def published_column(pub: dict) -> dict[str, str]:
    backend = "Ascend" if "Ascend" in pub["resource"] else "GPU"
    n = devices_label(pub["devices"], backend)
    return {
        "Model Version": "Pix2Pix",
        "Resource": pub["resource"],
        "MindSpore Version": pub["mindspore_version"],
        "Dataset": pub["dataset"],
        "Training Parameters": pub["training_parameters"],
        "Optimizer": "Adam",
        "Loss Function": LOSS_FUNCTIONS["vanilla"],
        "outputs": "probability",
        "Speed": f"{n}: {pub['ms_per_step']:g} ms/step",
        "Total time": f"{n}: {pub['total_time_h']:g}h",
        "Checkpoint for Fine tuning": f"{pub['checkpoint_mb']:g}M (.ckpt file)",
    }


def measured_column(b: dict) -> dict[str, str]:
    ms = b["ms_per_step"]
    n = devices_label(b["devices"], b["device"])
    one = " on 1 device" if b["devices"] > 1 else ""
    projection = "projected" + (", ideal scaling from 1 device" if b["devices"] > 1 else "")
    steps = f"steps={b['train_pairs'] // b['batch_size']}"
    if b["devices"] > 1:
        steps += f" ({b['steps_per_epoch']} per device)"
    return {
        "Model Version": f"pix2pix-ms {b['generator']} ({b['generator_params']:,} + {b['discriminator_params']:,})",
        "Resource": b["hardware"],
        "MindSpore Version": b["mindspore_version"],
        "Dataset": f"{b['dataset']} ({b['data']})",
        "Training Parameters": (
            f"epoch={b['epochs']}, {steps}, batch_size={b['batch_size']}, "
            f"lr={b['learning_rate']:g}, pad_mode={b['pad_mode']}{shape_and_precision(b)}"
        ),
        "Optimizer": "Adam",
        "Loss Function": LOSS_FUNCTIONS.get(b["gan_mode"], f"{b['gan_mode']} GAN Loss & L1 Loss"),
        "outputs": "probability",
        "Speed": f"{n}: {ms['median']:.0f} ms/step{one} (p10 {ms['p10']:.0f}, p90 {ms['p90']:.0f})",
        "Total time": f"{n}: {b['projected_total_h']:.2f}h ({projection})",
        "Checkpoint for Fine tuning": (
            f"{b['checkpoint_mb']:.0f}M (.ckpt file; {b['training_checkpoint_mb']:.0f}M with D and both optimizers)"
        ),
    }


def shape_and_precision(b: dict) -> str:
    """The image size and AMP level where a benchmark recorded them (older ones did not)."""
    if "crop_size" not in b:
        return ""
    size = b["crop_size"] if isinstance(b["crop_size"], list) else [b["crop_size"]] * 2
    return f", image={size[0]}x{size[1]}, amp={b.get('amp', 'O0')}"


def measured_label(b: dict) -> str:
    """A measured column's header: the experiment, and the AMP level and image size where not the default."""
    label = b.get("experiment") or b["dataset"]
    extras = [f"amp={b['amp']}"] if b.get("amp", "O0") != "O0" else []
    if isinstance(b.get("crop_size"), list):
        extras.append(f"{b['crop_size'][0]}x{b['crop_size'][1]}")
    return f"{label} ({', '.join(extras)})" if extras else label


def name_placeholder(b: dict) -> str:
    """The benchmark's command with its experiment's name as NAME, so one line stands for all rows."""
    return b["command"].replace(b["experiment"], "NAME") if b.get("experiment") else b["command"]


def published_figures() -> dict[str, dict]:
    """The ModelZoo's published figures by experiment name (published.yaml, beside this module)."""
    return OmegaConf.to_container(OmegaConf.load(PUBLISHED))


def performance_tables(runs: list[Run]) -> str:
    """The ModelZoo README's tables: per (table, dataset), each published column beside its measurement."""
    figures = published_figures()
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for run in runs:
        b = run.results
        pub = figures.get(b.get("experiment") or "") or b.get("published") or {}  # older files carried theirs
        key = (pub.get("table", "Measured without published figures"), b["dataset"])
        groups.setdefault(key, []).append((b, pub))
    out = []
    for (table, dataset), items in groups.items():
        items.sort(key=lambda item: (item[1].get("column", ""), item[0].get("experiment") or ""))
        header, columns = ["Parameters"], []
        for b, pub in items:
            if pub:
                header.append(f"{pub['column']} (published)")
                columns.append(published_column(pub))
            header.append(f"measured: {measured_label(b)}")
            columns.append(measured_column(b))
        rows = [[name, *(col[name] for col in columns)] for name in PERFORMANCE_ROWS]
        out.append(f"### {table}: {dataset}\n\n{markdown(header, rows)}")
    first = runs[0].results
    commands = sorted({name_placeholder(r.results) for r in runs})
    out.append(
        f"Measured with MindSpore {first['mindspore_version']}, Python {first['python_version']}, on "
        f"{first['hardware']}, with " + "; ".join(f"`{c}`" for c in commands) + ".\n"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    try:
        return report(argv)
    except Pix2PixError as err:
        raise SystemExit(f"error: {err}") from None


def report(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pix2pix.tools.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or sweep folders (multirun/DATE/TIME)")
    parser.add_argument("--out", type=Path, help="where the files go (default: the one folder given, else .)")
    parser.add_argument(
        "--plot", action="store_true", help="also write report.png: the metric against each swept value"
    )
    parser.add_argument("--metric", default="val_L1", help="the metric to plot (a metrics.json key; default val_L1)")
    parser.add_argument("--performance", action="store_true", help="performance tables from benchmark.json files")
    args = parser.parse_args(argv)
    out = args.out or (args.paths[0] if len(args.paths) == 1 else Path("."))
    runs = find_runs(args.paths, "benchmark.json" if args.performance else "metrics.json")
    out.mkdir(parents=True, exist_ok=True)

    if args.performance:
        text = performance_tables(runs)
        write_text(out / "performance.md", text)
        print(text)
        print(f"wrote {out / 'performance.md'}")
        return 0

    header, rows = training_table(runs, args.paths)
    table = markdown(header, rows)
    write_text(out / "report.md", table)
    write_text(out / "report.csv", csv_text(header, rows))
    print(table, end="")
    written = [out / "report.md", out / "report.csv"]
    if args.plot:
        if not any(args.metric in r.results for r in runs):
            raise SystemExit(
                f"error: --metric {args.metric}: not in metrics.json "
                "(try val_L1, val_psnr, val_ssim, or val_fid of runs with val.fid=true)"
            )
        written.append(plot(runs, args.metric, out / "report.png"))
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The package's shape, checked from its imports: one home per name, no import that runs upward."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "pix2pix"

# Lowest first: a module imports from its own package and from lower layers only.
LAYERS = [
    {"errors"},
    {"choices", "track", "cache"},
    {"backend", "parallel", "models", "targets"},
    {"data", "checkpoint"},
    {"weights"},
    {"scoring"},  # FID's Inception features need the network, its weights and the data's image suffixes
    {"runs"},
    {"config"},
    {"infer"},
    {"training"},
    {"tasks"},
    {"tools", "cli", "api"},
]
INFERENCE = ("pix2pix.infer", "pix2pix.tasks.evaluate", "pix2pix.tasks.predict", "pix2pix.tasks.export")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every pix2pix module `path` imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pix2pix"):
            if node.module == "pix2pix":
                found |= {f"pix2pix.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pix2pix")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_two_modules_share_a_name():
    names = Counter(p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__")
    names.update(p.name for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")
    assert [name for name, count in names.items() if count > 1] == []


def test_every_package_has_a_layer():
    tops = {module_name(p).split(".")[1] for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__"}
    assert tops <= set().union(*LAYERS)


def test_nothing_imports_upward():
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        if source != "pix2pix"
        for target in targets
        if layer(target) > layer(source)
        or (layer(target) == layer(source) and target.split(".")[1] != source.split(".")[1])
    ]
    assert upward == []


def test_inference_imports_nothing_from_training():
    edges = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        if source.startswith(INFERENCE)
        for target in targets
        if target.startswith("pix2pix.training")
    ]
    assert edges == []


def test_nothing_inside_the_package_imports_the_public_api():
    assert [source for source, targets in graph().items() if "pix2pix.api" in targets] == []


def test_the_training_loop_is_short_and_knows_no_faults():
    source = (PACKAGE / "training" / "loop.py").read_text()
    loop = next(
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef) and node.name == "Trainer"
    )
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in loop.body if isinstance(f, ast.FunctionDef)}
    assert lengths["fit"] + lengths["train_epoch"] < 80 and max(lengths.values()) < 40, lengths
    assert "fault" not in source.lower()


def test_the_command_line_check_imports_no_mindspore():
    """launch.py checks the command line before anything heavy: a mistake costs no MindSpore import."""
    probe = "import sys, pix2pix.cli, pix2pix.config.checks; print(sorted(m for m in sys.modules if 'mindspore' in m))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_inference_tasks_load_no_training_code():
    """What the imports above promise holds at run time too: eval, predict, export, the data tasks and the
    API load nothing of training (the task registry imports a task's module when it runs)."""
    modules = (
        "pix2pix.tasks, pix2pix.tasks.evaluate, pix2pix.tasks.predict, pix2pix.tasks.export, pix2pix.tasks.datasets"
    )
    probe = (
        f"import sys, {modules}, pix2pix.api; "
        "print(sorted(m for m in sys.modules if m.startswith(('pix2pix.training', 'pix2pix.tasks.train'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"

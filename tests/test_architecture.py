"""The package's layers import only downward, and the one metric table agrees with what runs log."""

import ast
import sys
from pathlib import Path

import pytest
import yaml
from helpers import tiny_run

from stiefel_gan.config.compose import compose_config
from stiefel_gan.measure.table import BY_KEY, HEADLINE, METRIC_GOALS, OBJECTIVES
from stiefel_gan.run.records import read_metrics
from stiefel_gan.run.runner import objective, run

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "stiefel_gan"

#: Each part of the package and its level: a module may import its own part and parts of a lower level.
#: ``effective_weights`` sits with ``spectral`` (both read layers; neither knows the other). ``metrics``
#: sits above ``data``: the digits metrics compare with a split of the digits that ``data`` owns.
LEVELS = {"_modules": 0, "manifold": 1, "spectral": 2, "effective_weights": 2, "data": 3, "metrics": 4,
          "config": 5, "configs": 5, "gan": 6, "measure": 7, "run": 8, "report": 9, "commands": 10,
          "__main__": 10, "__init__": 1}
#: The reusable core: nothing but the standard library, torch, geoopt and numpy.
CORE = ("_modules", "manifold", "spectral", "effective_weights")
CORE_THIRD_PARTY = {"torch", "geoopt", "numpy"}


def _part(module: str) -> str:
    """``stiefel_gan.run.runner`` -> ``run``; ``stiefel_gan`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """Every module ``path`` imports (at any depth, function-level imports included), absolute."""
    relative = path.relative_to(REPO).with_suffix("")
    here = list(relative.parts[:-1]) if relative.name != "__init__" else list(relative.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:  # from . import a, b: a name is a module if its file or folder exists
                for alias in node.names:
                    folder = REPO.joinpath(*module.split("."))
                    is_module = (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir()
                    yield f"{module}.{alias.name}" if is_module else module, node.lineno
            else:
                yield module, node.lineno


def _package_files():
    return sorted(PACKAGE.rglob("*.py"))


def test_the_walker_resolves_relative_imports():
    found = dict(_imports(PACKAGE / "run" / "runner.py"))
    assert "stiefel_gan.config.checks" in found and "stiefel_gan.gan.builder" in found


@pytest.mark.parametrize("path", _package_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_points_down_the_layers(path):
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    level = LEVELS[_part(module)]
    wrong = []
    for imported, line in _imports(path):
        if imported == "stiefel_gan":
            continue
        if imported.startswith("stiefel_gan."):
            target = _part(imported)
            if LEVELS[target] > level and target != _part(module):
                wrong.append(f"line {line}: {imported} (level {LEVELS[target]} above {_part(module)}'s {level})")
        elif _part(module) in CORE:
            top = imported.split(".")[0]
            if top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                wrong.append(f"line {line}: {imported} (the core imports only torch, geoopt and numpy)")
    assert not wrong, wrong


def test_the_sweeper_plugin_imports_only_the_config():
    for path in (REPO / "hydra_plugins").rglob("*.py"):
        for imported, line in _imports(path):
            if imported.startswith("stiefel_gan"):
                assert imported.startswith("stiefel_gan.config."), f"{path.name}:{line} imports {imported}"


def test_tests_and_benchmarks_compose_through_the_config_not_the_commands():
    for folder in ("tests", "benchmarks", "examples"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stiefel_gan.commands"):
                    names = {alias.name for alias in node.names}
                    assert "compose_config" not in names, f"{path.name}:{node.lineno} composes through commands"


# ----------------------------------------------------------------------------------- the metric table

def _cifar_overrides(tmp_path, monkeypatch):
    """CIFAR-10 in its own on-disk format (2,000 training images: the ``quick`` protocol's 2,000 real
    ones), with torchvision's md5 list pointed at these files, and the tests' tiny torch-fidelity feature
    extractor in place of Inception (no weights here)."""
    from test_data import CIFAR_FILES, _write_cifar
    from test_metrics_fidelity import TINY
    from torchvision.datasets import CIFAR10

    root = tmp_path / "cifar"
    root.mkdir()
    md5 = _write_cifar(root, images_per_file=400)
    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5[name]] for name in CIFAR_FILES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return ["data=cifar10", f"data.root={root}", "model.g_width=8", "model.d_width=8", "metrics.protocol=quick",
            f"metrics.feature_extractor={TINY}", "metrics.n_samples=64"]


@pytest.mark.parametrize("dataset", ["digits", "stacked_digits", "ring8", "grid25", "cifar10"])
def test_every_quality_key_a_run_logs_is_in_the_table_and_the_objective_is_a_number(dataset, tmp_path, monkeypatch):
    extra = {"digits": ["experiment=compare", "metrics.n_samples=64"],
             "stacked_digits": ["data=stacked_digits", "model.g_width=8", "model.d_width=8", "metrics.n_samples=64"],
             "ring8": ["data=ring8", "model=mlp", "data.n_samples=256", "metrics.n_samples=64"],
             "grid25": ["data=grid25", "model=mlp", "data.n_samples=256", "metrics.n_samples=64"]}
    overrides = _cifar_overrides(tmp_path, monkeypatch) if dataset == "cifar10" else extra[dataset]
    # two steps with the Geometry Score (a few landmarks): every key a run can log
    cfg = compose_config(tiny_run(2, *overrides, "metrics.geometry_score=true", "metrics.gs_n=4",
                                  "metrics.gs_landmarks=8", f"out_dir={tmp_path / 'runs'}", "name=table", "disc=sn"))
    run_dir = run(cfg)
    logged = {key for row in read_metrics(run_dir) for key in row if key.startswith("quality/")}
    assert logged, "the run logged no quality metric"
    assert logged <= set(BY_KEY), f"logged but not in the table: {sorted(logged - set(BY_KEY))}"
    assert HEADLINE[dataset] in logged
    assert all(dataset in BY_KEY[key].datasets for key in logged)
    value = objective(run_dir, cfg)
    last = [row[HEADLINE[dataset]] for row in read_metrics(run_dir) if HEADLINE[dataset] in row][-1]
    # a number, the headline's last value (nan where the metric is undefined: the mode KL of 2-step
    # mixture samples of which none lies near a mode)
    assert isinstance(value, float) and (value == last or value != value and last != last)


def test_the_tables_directions_and_headlines_agree():
    assert set(OBJECTIVES) == set(HEADLINE)
    for dataset, (key, goal) in OBJECTIVES.items():
        assert METRIC_GOALS[key] == goal and dataset in BY_KEY[key].datasets


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_sweep_file_optimizes_its_datasets_headline(path):
    sweep = yaml.safe_load(path.read_text())
    study = next(item.split("=", 1)[1] for item in sweep["command"] if str(item).startswith("experiment="))
    datasets = {compose_config([f"experiment={study}"]).data.name}
    for name, spec in sweep.get("parameters", {}).items():
        if name == "data":
            datasets = set(spec["values"])
    assert {HEADLINE[dataset] for dataset in datasets} == {sweep["metric"]["name"]}
    assert sweep["metric"]["goal"] == METRIC_GOALS[sweep["metric"]["name"]]

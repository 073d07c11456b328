"""The installable package: build the wheel, install it without -e into a fresh directory, and run the
installed ``stiefel-gan`` from a working directory outside the repository (no source tree in reach)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import TINY_MODELS, assert_one_line, tiny_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, command, env)``: the wheel installed with ``pip install --no-deps --target site``."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("stiefel_gan-*.whl")
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    # only the installed copy on the path: not the repository, not an editable install's source tree
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return wheel, site, [str(site / "bin" / "stiefel-gan")], env


def test_the_wheel_ships_every_config(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n[len("stiefel_gan/configs/"):] for n in names if n.startswith("stiefel_gan/configs/") and n.endswith(".yaml")}
    in_repo = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped == in_repo and "config.yaml" in shipped
    # every Python package of the source tree is in the wheel (pyproject.toml lists them by hand)
    packages = {str(p.parent.relative_to(REPO)).replace(os.sep, ".") for p in (REPO / "stiefel_gan").rglob("__init__.py")}
    assert all(f"{package.replace('.', '/')}/__init__.py" in names for package in packages)


@pytest.mark.slow
def test_installed_entry_point_trains_outside_the_repository(installed, tmp_path):
    _, _, command, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    version = subprocess.run([*command, "--version"], cwd=work, env=env, capture_output=True, text=True, check=True)
    from stiefel_gan import __version__

    assert version.stdout.strip() == f"stiefel-gan {__version__}"
    searchpath = subprocess.run([*command, "train", "--info", "searchpath"], cwd=work, env=env,
                                capture_output=True, text=True, check=True).stdout
    assert "pkg://stiefel_gan.configs" in searchpath  # the installed package's configs, not a checkout's

    printed = subprocess.run([*command, "train", "disc=stiefel_grid", "--cfg", "job"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout
    disc = yaml.safe_load(printed)["disc"]
    assert (disc["kind"], disc["spectrum"]) == ("stiefel", "grid")
    help_text = subprocess.run([*command, "train", "--help"], cwd=work, env=env, capture_output=True, text=True,
                               check=True).stdout
    assert "disc: " in help_text and "stiefel_curve" in help_text and "experiment: " in help_text

    steps = tiny_run(2, *TINY_MODELS["mlp"], "metrics.n_samples=64", "name=installed")
    trained = subprocess.run([*command, "train", *steps], cwd=work, env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    run_dir = work / "runs" / "installed" / "sn-radam-s0"
    assert (work / trained.stdout.strip().splitlines()[-1]).resolve() == run_dir.resolve()
    rows = [yaml.safe_load(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss/d" in row] == [1, 2]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()


#: A ``sitecustomize`` under which every installed distribution that ``pip install stiefel-gan`` (no
#: extras) would not bring raises ModuleNotFoundError on import: what stays importable is the standard
#: library, ``stiefel_gan``, torch, geoopt, numpy and, transitively, their own requirements (read from
#: the installed distributions' metadata), as where only the core wheel is installed.
CORE_ONLY = r'''
import importlib.metadata, re, sys

def _requirements(name, seen):
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return
    for line in requires:
        if "extra ==" not in line:
            _requirements(re.split(r"[ ;<>=!~\[(]", line, maxsplit=1)[0], seen)

_distributions = set()
for root in ("torch", "geoopt", "numpy"):
    _requirements(root, _distributions)
_owners = importlib.metadata.packages_distributions()
_blocked = {module for module, owners in _owners.items()
            if not any(re.sub(r"[-_.]+", "-", o).lower() in _distributions for o in owners)} - {"stiefel_gan"}

# None in sys.modules is how Python marks a module absent: import raises ModuleNotFoundError, and
# importlib.util.find_spec answers None (torch probes optional packages that way)
for _module in _blocked - set(sys.stdlib_module_names):
    sys.modules[_module] = None
'''

CORE_USE = r'''
import torch
from torch import nn
import stiefel_gan.manifold, stiefel_gan.spectral, stiefel_gan.effective_weights
from stiefel_gan.manifold import FixedCurve, make_optimizer, stiefel_layers, stiefelize
from stiefel_gan.spectral import reshape_singular_values

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
stiefelize(model, spectrum=FixedCurve(tau=2.0, eps=0.1))
optimizer = make_optimizer(model, "radam", lr=1e-2)
loss = model(torch.randn(5, 3, 8, 8)).square().mean()
loss.backward()
optimizer.step()
for name, layer in stiefel_layers(model):
    exact = layer.singular_values().detach()
    assert torch.allclose(reshape_singular_values(layer.weight).detach(), exact, atol=1e-5), name
try:
    import hydra  # noqa: F401  (installed here, but not a requirement of the core wheel)
except ModuleNotFoundError:
    print("core ok")
'''


def _core_only_env(env: dict, tmp_path: Path) -> dict:
    site = tmp_path / "core_only"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(CORE_ONLY)
    return {**env, "PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]])}


def test_the_core_wheel_alone_trains_a_stiefelized_model_one_step(installed, tmp_path):
    _, _, _, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", CORE_USE], cwd=work, env=_core_only_env(env, tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "core ok"


def test_a_suite_command_without_the_suite_extra_says_which_extra_in_one_line(installed, tmp_path):
    _, _, command, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    for argv in ([*command, "compare"], [sys.executable, "-m", "stiefel_gan", "train"]):
        result = subprocess.run(argv, cwd=work, env=_core_only_env(env, tmp_path), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, result.stderr[-3000:]
        assert_one_line(result.stderr.strip(), "stiefel-gan[suite]", "hydra-core")
        assert not (work / "runs").exists()

"""benchmarks/step_time.py runs on a machine without CIFAR-10 (it times random batches of the data's shape)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_runs_the_cifar_models_without_the_dataset(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--models", "standard",
         "--variants", "none,sn,stiefel_fixed/qr", "--quick", "--no-memory", "--no-spectral", "--no-iteration",
         "--batch-size", "2", "--threads", "1", "--json", str(out), f"data.root={tmp_path / 'no_cifar_here'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    variants = json.loads(out.read_text())["models"]["standard"]["variants"]
    assert set(variants) == {"none", "sn", "stiefel_fixed/qr"}
    assert all(v["d_update"]["median_ms"] > 0 for v in variants.values())
    assert not (tmp_path / "no_cifar_here").exists()  # nothing was downloaded or created


def _without(tmp_path, package: str) -> dict:
    """An environment whose Python cannot import ``package`` (a ``sitecustomize`` maps it to None in
    ``sys.modules``, which is how Python marks a module as absent), whether or not it is installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{package!r}] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_step_time_names_the_extra_of_a_missing_peer_before_building_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--models", "standard",
         "--variants", "sn,peer:geotorch_orthogonal", "--quick", "--json", str(tmp_path / "bench.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=_without(tmp_path, "geotorch"))
    assert result.returncode == 2, result.stderr[-2000:]
    # the script's own output is this one line (geoopt's import may add a FutureWarning of torch's before it)
    assert [line for line in result.stderr.splitlines() if line.startswith("step_time.py:")] == [
        'step_time.py: --variants peer:geotorch_orthogonal is not allowed here: it needs geotorch, which is not '
        'installed (python -m pip install -e ".[bench]", or leave peer:geotorch_orthogonal out of --variants)']
    assert not (tmp_path / "bench.json").exists()

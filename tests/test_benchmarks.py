"""benchmarks/step_time.py runs on a machine without CIFAR-10 (it times random batches of the data's shape)."""

import json
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

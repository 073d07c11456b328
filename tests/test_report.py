"""`stiefel-gan report` from real tiny runs: the table aggregates seeds, the figures render."""

import numpy as np
import pytest
from PIL import Image

from stiefel_gan.cli import compose_config, main
from stiefel_gan.report import find_run_dirs, group_variants
from stiefel_gan.runner import run
from stiefel_gan.tracking import read_metrics

TINY = ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.sample_every=3", "train.checkpoint_every=3",
        "train.n_grid_samples=4", "train.progress=false", "wandb.mode=disabled", "metrics.n_samples=100",
        "metrics.geometry_score=false", "metrics.diagnostics_every=3", "model.g_width=4", "model.d_width=4",
        "model.z_dim=8"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for disc in ("sn", "stiefel_fixed"):
        for seed in (0, 1):
            run(compose_config([*TINY, f"out_dir={out}", f"disc={disc}", f"train.seed={seed}"]))
    return out / "default"


def test_runs_group_by_variant_across_seeds(sweep_dir):
    groups = group_variants(find_run_dirs(sweep_dir))
    assert sorted(groups) == ["sn", "stiefel_fixed"]
    assert all(len(dirs) == 2 for dirs in groups.values())


def test_report_table_holds_mean_and_std_over_seeds(sweep_dir, capsys):
    assert main(["report", str(sweep_dir)]) == 0
    report = (sweep_dir / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| variant"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in report.splitlines() if line.startswith("| sn "))
    cells = dict(zip(columns, [c.strip() for c in row.strip("|").split("|")]))
    finals = [[r for r in read_metrics(d) if "loss/d" in r][-1]["loss/d"]
              for d in sorted(sweep_dir.glob("sn-*"))]
    mean, std = cells["loss/d"].split(" ± ")
    assert float(mean) == pytest.approx(np.mean(finals), rel=1e-3)
    assert float(std) == pytest.approx(np.std(finals, ddof=1), rel=0.05)
    assert cells["seeds"] == "2" and "quality/digits_fd" in columns and "lipschitz/upper_bound" in columns


def test_report_figures_render(sweep_dir):
    main(["report", str(sweep_dir)])
    for name in ("samples.png", "curves.png", "spectra.png", "gradients.png"):
        with Image.open(sweep_dir / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200
            assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas
        assert f"]({name})" in (sweep_dir / "report.md").read_text()


def test_report_of_a_directory_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run directory" in err

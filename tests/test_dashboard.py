"""The study dashboard, built by wandb-workspaces and checked through its dry-run JSON spec (the view
payload ``Workspace.save`` would upload); no network."""

from __future__ import annotations

import json
import re

import pytest

from stiefel_gan.commands.cli import main
from stiefel_gan.run.tracker import STEP_METRIC


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard") / "smoke.json"
    assert main(["dashboard", "--entity", "lab", "--project", "stiefel", "--study", "smoke", "--dry-run", str(path)]) == 0
    return json.loads(path.read_text())


def _panels(spec) -> dict[str, list[dict]]:
    sections = spec["view"]["spec"]["section"]["panelBankConfig"]["sections"]
    return {section["name"]: section["panels"] for section in sections}


def test_the_study_is_one_group_per_variant_with_sn_as_the_baseline(spec):
    assert spec["groups"] == ["smoke/smoke_sn", "smoke/smoke_stiefel"]
    assert spec["baseline_groups"] == ["smoke/smoke_sn"]
    view = spec["view"]
    assert (view["entity"], view["project"]) == ("lab", "stiefel")
    text = json.dumps(view)
    # the runset keeps the study's runs (job type) and groups them by W&B group
    assert '"jobType"' in text and '"smoke"' in text and '"group"' in text
    # the SN group is drawn in the baseline colour
    colors = view["spec"]["section"]["customRunColors"]
    assert list(colors.values()) == ["#000000"] and "smoke%2Fsmoke_sn" in next(iter(colors))


def test_the_panels_cover_quality_spectra_bounds_gradients_drift_and_samples(spec):
    panels = _panels(spec)
    assert list(panels) == ["Quality vs SN", "Spectra", "Lipschitz bounds", "Gradients per layer and factor",
                            "Manifold", "Samples"]
    line_plots = [p["config"] for section in panels.values() for p in section if p["viewType"] == "Run History Line Plot"]
    # every line plot: the generator step on x, a mean per group with its min-max band
    assert all(c["xAxis"] == STEP_METRIC and c["groupAgg"] == "mean" and c["groupArea"] == "minmax" for c in line_plots)
    regexes = [re.compile(c["metricRegex"]) for c in line_plots]

    def plotted(key: str) -> bool:
        return any(regex.search(key) for regex in regexes)

    # the keys every run logs (stiefel_gan.measure.diagnostics, quality) each land in a panel
    for key in ("quality/digits_fd", "sigma_max/features.conv1", "operator_norm/features.conv1",
                "lipschitz/upper_bound", "lipschitz/lower_bound", "grad_norm/features.conv1/X",
                "grad_norm/fc/lambda", "drift/fc", "tau/fc", "saturation/sigmoid_grad"):
        assert plotted(key), key
    assert not plotted("loss/d") and not plotted("lipschitz/grad_norm_real")
    (scalar,) = [p["config"] for p in panels["Quality vs SN"] if p["viewType"] == "Scalar Chart"]
    assert scalar["metrics"] == ["summary_metrics.quality/digits_fd"]
    (custom,) = [p["config"] for p in panels["Spectra"] if "userQuery" in p["config"]]
    assert custom["panelDefId"] == "wandb/lineseries/v0" and "spectrum/normalized_table" in json.dumps(custom)
    (media,) = [p["config"] for p in panels["Samples"]]
    assert "samples" in json.dumps(media)


def test_dashboard_refusals_are_one_line(tmp_path, stops_in_one_line, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    stops_in_one_line(["dashboard", "--entity", "lab", "--project", "stiefel", "--study", "smoke"], "--dry-run")
    stops_in_one_line(["dashboard", "--entity", "lab", "--project", "p", "--study", "nope", "--dry-run",
                       str(tmp_path / "x.json")], "--study 'nope' is not allowed")
    assert not (tmp_path / "x.json").exists()

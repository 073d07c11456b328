"""W&B sweeps: every ``configs/sweeps/<study>.yaml`` agrees with its experiment's Hydra sweep and
expands, through W&B's own sweep engine and wandb's agent command builder, into the exact command
lines an agent would run; the smoke study runs with ``--local`` and its offline W&B runs are read back."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from helpers import sweeper_axes
from wandb_records import read_offline_run

from stiefel_gan.commands.cli import main
from stiefel_gan.commands.sweeps import available_studies, load_sweep, study_commands
from stiefel_gan.config.paths import RunDir

REPO = Path(__file__).resolve().parent.parent
SWEEP_FILES = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


def test_every_named_study_has_its_sweep_file():
    assert available_studies() == [p.stem for p in SWEEP_FILES]
    assert "smoke" in available_studies()


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_sweep_file_is_the_twin_of_the_hydra_sweep(path):
    study = path.stem
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid"
    assert sweep["metric"]["goal"] in ("minimize", "maximize") and sweep["metric"]["name"].startswith("quality/")
    assert sweep["command"] == ["stiefel-gan", "train", f"experiment={study}", "${args_no_hyphens}"]
    axes = sweeper_axes(study)
    assert set(sweep["parameters"]) == set(axes)
    for key, values in axes.items():
        assert [str(v) for v in sweep["parameters"][key]["values"]] == values, key
    assert {"variant", "train.seed"} <= set(axes)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_sweep_expands_into_the_agents_command_lines(path):
    """The reference is the Cartesian product of the axes, one ``key=value`` per axis (wandb's
    ``${args_no_hyphens}``); the sweeps engine must propose each combination exactly once."""
    study = path.stem
    axes = sweeper_axes(study)
    expected = {("stiefel-gan", "train", f"experiment={study}",
                 *sorted(f"{key}={value}" for key, value in zip(axes, combination)))
                for combination in itertools.product(*axes.values())}
    commands = study_commands(study)
    assert len(commands) == len(expected)
    assert {(*c[:3], *sorted(c[3:])) for c in commands} == expected


def test_bad_sweep_files_are_refused_in_one_line(tmp_path, monkeypatch, stops_in_one_line):
    from stiefel_gan.commands import sweeps as wandb_sweeps

    sweeps_dir = tmp_path / "sweeps"
    sweeps_dir.mkdir()
    for path in (REPO / "configs").iterdir():  # a configs tree with two broken sweep files
        if path.name != "sweeps":
            (tmp_path / path.name).symlink_to(path)
    smoke = yaml.safe_load((REPO / "configs" / "sweeps" / "smoke.yaml").read_text())
    (sweeps_dir / "typo.yaml").write_text(yaml.safe_dump(
        {**smoke, "parameters": {**smoke["parameters"], "train.sed": {"values": [0, 1]}}}))
    (sweeps_dir / "badmethod.yaml").write_text(yaml.safe_dump({**smoke, "method": "everything"}))
    monkeypatch.setattr(wandb_sweeps, "config_files", lambda: tmp_path)

    stops_in_one_line(["sweep", "typo", "--local"], "train.sed")
    stops_in_one_line(["sweep", "badmethod", "--local"], "not a valid W&B sweep")
    stops_in_one_line(["sweep", "nope"], "study 'nope' is not allowed")
    with pytest.raises(Exception):
        load_sweep("badmethod")


def test_sweep_without_a_server_is_refused_in_one_line(stops_in_one_line, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    stops_in_one_line(["sweep", "smoke"], "--local")


@pytest.mark.slow
def test_smoke_study_runs_locally_with_a_wandb_group_per_variant(tmp_path, monkeypatch):
    """Two variants x two seeds, run as the agent would run them; W&B offline runs read back."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user settings or credentials
    shrink = [f"out_dir={tmp_path / 'runs'}", "train.steps=2", "train.progress=false"]
    assert main(["sweep", "smoke", "--local", *shrink]) == 0
    study = tmp_path / "runs" / "smoke"
    run_dirs = sorted(p for p in study.iterdir() if RunDir(p).config.is_file())
    assert [p.name for p in run_dirs] == ["smoke_sn-s0", "smoke_sn-s1", "smoke_stiefel-s0", "smoke_stiefel-s1"]
    records = {p.name: read_offline_run(p / "wandb") for p in run_dirs}
    for name, record in records.items():
        variant, seed = name.rsplit("-s", 1)
        assert record.group == f"smoke/{variant}" and record.job_type == "smoke"
        assert record.config["train"]["seed"] == int(seed) and record.config["variant"] == variant
        assert ("baseline" in record.tags) == (variant == "smoke_sn")
        assert any("quality/digits_fd" in row for row in record.history)
    assert main(["report", str(study)]) == 0
    report = (study / "report.md").read_text()
    assert "smoke_stiefel" in report and "smoke_sn" in report


def test_a_failing_job_of_a_local_sweep_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    """As a ``wandb agent`` would, the local sweep goes on after a job fails, names it at the end with
    its status, and exits 1."""
    from stiefel_gan.measure.quality import SampleQuality
    from stiefel_gan.run.records import read_status

    evaluate = SampleQuality.__call__

    def broken_for_one_job(self, generator, final=False):
        if self.cfg.variant == "smoke_stiefel" and self.cfg.train.seed == 0:
            raise ZeroDivisionError("a bug in one job")
        return evaluate(self, generator, final)

    monkeypatch.setattr(SampleQuality, "__call__", broken_for_one_job)
    shrink = [f"out_dir={tmp_path / 'runs'}", "train.steps=2", "train.progress=false", "wandb.mode=disabled"]
    assert main(["sweep", "smoke", "--local", *shrink]) == 1
    study = tmp_path / "runs" / "smoke"
    broken = study / "smoke_stiefel-s0"
    assert read_status(broken)["status"] == "failed"
    assert [p.name for p in sorted(study.iterdir()) if p != broken and (read_status(p) or {}).get("status") ==
            "finished"] == ["smoke_sn-s0", "smoke_sn-s1", "smoke_stiefel-s1"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"stiefel-gan: {broken}: failed: ZeroDivisionError: a bug in one job"

"""The Hydra app (``stiefel-gan train``): Hydra's own flags, sweeps through Hydra's sweeper and
hydra-submitit-launcher (real submitit processes), launcher checks, run-directory claims, and
preemption (real signals to a real training process)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_MODELS, hydra_settings, tiny_run

from stiefel_gan.commands.cli import main
from stiefel_gan.config.compose import config_source
from stiefel_gan.config.paths import RunDir
from stiefel_gan.run.records import read_metrics
from stiefel_gan.run.rundir import claim_owner, claim_run_dir

REPO = Path(__file__).resolve().parent.parent


def fast(tmp_path, steps, *overrides):
    """The cheapest real runs: an MLP pair on the 2-D ring, quality at the end on 64 samples, into tmp_path/runs."""
    return tiny_run(steps, *TINY_MODELS["mlp"], "metrics.n_samples=64", f"out_dir={tmp_path / 'runs'}", *overrides)


def loss_steps(run_dir) -> list[int]:
    return [row["step"] for row in read_metrics(run_dir) if "loss/d" in row]


# ------------------------------------------------------------------------------ Hydra's own flags


def test_cfg_job_prints_the_composed_config(capsys):
    assert main(["train", "disc=stiefel_curve", "disc.tau=0.25", "--cfg", "job"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["disc"]["kind"], printed["disc"]["spectrum"], printed["disc"]["tau"]) == ("stiefel", "curve", 0.25)
    assert "hydra" not in printed


def test_help_lists_the_config_groups_and_info_runs(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    groups = {line.split(":")[0] for line in out.splitlines() if ":" in line and not line.startswith(" ")}
    on_disk = {p.name for p in (REPO / "configs").iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    assert on_disk - {"sweeps"} <= groups
    assert "stiefel_fixed" in out and "hydra/launcher=" in out
    assert main(["train", "--info", "searchpath"]) == 0
    source = config_source()  # pkg://stiefel_gan.configs when installed, configs/ in a bare checkout
    assert source.replace("pkg://", "").rstrip("/") in capsys.readouterr().out


def test_shell_completion_through_the_one_word_entry_point(monkeypatch, capsys):
    from stiefel_gan.commands import train

    monkeypatch.setenv("COMP_LINE", "stiefel-gan-train disc=stiefel_c")
    monkeypatch.setenv("COMP_POINT", str(len("stiefel-gan-train disc=stiefel_c")))
    monkeypatch.setattr(sys, "argv", ["stiefel-gan-train", "--shell-completion", "query=bash"])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out.split() == ["disc=stiefel_curve"]


def test_run_directory_is_the_readable_layout_with_hydra_records(tmp_path, capsys):
    assert main(["train", *fast(tmp_path, 2, "name=layout")]) == 0
    run_dir = tmp_path / "runs" / "layout" / "sn-radam-s0"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir)
    assert loss_steps(run_dir) == [1, 2]
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "train.steps=2" in overrides and "name=layout" in overrides
    # the same command again is a new run, in a directory of its own, with its own Hydra records
    assert main(["train", *fast(tmp_path, 3, "name=layout")]) == 0
    second = run_dir.with_name("sn-radam-s0-2")
    assert loss_steps(second) == [1, 2, 3] and loss_steps(run_dir) == [1, 2]
    assert "train.steps=3" in yaml.safe_load((second / ".hydra" / "overrides.yaml").read_text())


def test_progress_off_a_terminal_is_one_line_per_log_step(tmp_path, capsys):
    assert main(["train", *fast(tmp_path, 3, "train.log_every=2", "train.progress=true")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train: step")]
    assert [line.split()[2] for line in lines] == ["2/3", "3/3"]


def test_a_failure_during_training_keeps_its_traceback_and_checkpoint(tmp_path, capsys, monkeypatch):
    """A bug is not a usage error: exit status 1 with the traceback, and the last checkpoint kept."""
    from stiefel_gan.measure.quality import SampleQuality

    def broken(self, generator, final=False):
        raise ValueError("a bug deep inside an evaluation")

    monkeypatch.setattr(SampleQuality, "__call__", broken)
    args = fast(tmp_path, 3, "name=bug", "train.checkpoint_every=2", "metrics.every=3")
    assert main(["train", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "a bug deep inside an evaluation" in err and "stiefel-gan: error" not in err
    checkpoint = torch.load(RunDir(tmp_path / "runs" / "bug" / "sn-radam-s0").checkpoint, weights_only=False)
    assert checkpoint["step"] == 2


def _claim_in_a_process(base, owner, results):
    results.put((owner, str(claim_run_dir(Path(base), owner)[0])))


def test_concurrent_claims_get_distinct_directories(tmp_path):
    """Eight processes claim the same name at once: each gets its own directory (O_EXCL)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    base = tmp_path / "race" / "sn-radam-s0"
    processes = [context.Process(target=_claim_in_a_process, args=(base, f"owner{i}", results)) for i in range(8)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    claimed = dict(results.get() for _ in processes)
    expected = {str(base)} | {f"{base}-{k}" for k in range(2, 9)}
    assert set(claimed.values()) == expected
    for owner, directory in claimed.items():
        assert claim_owner(Path(directory)) == owner
    # an owner that claimed before (a requeued Slurm job) gets its own directory back
    assert claim_run_dir(base, "owner5") == (Path(claimed["owner5"]), True)


# ------------------------------------------------------------------------------------------- sweeps


def test_sweep_checks_every_job_before_the_first_one_trains(tmp_path, stops_in_one_line):
    # the second job (stiefel_fixed with Adam) is invalid: nothing trains, nothing is written
    args = ["train", "-m", *fast(tmp_path, 1, "optim=adam"), "disc=sn,stiefel_fixed,none"]
    stops_in_one_line(args, "optim=adam is not allowed with disc.kind=stiefel")
    assert not (tmp_path / "runs").exists()
    stops_in_one_line(["train", "-m", *fast(tmp_path, 1), "disc=sn,bogus"], "disc/bogus")
    assert not (tmp_path / "runs").exists()


def test_sweep_over_an_unnamed_key_gives_distinct_runs_and_groups(tmp_path):
    assert main(["train", "-m", *fast(tmp_path, 1, "name=shape", "disc=stiefel_fixed"),
                 "disc.tau=0.5,2"]) == 0
    sweep = tmp_path / "runs" / "shape"
    runs = sorted(p.name for p in sweep.iterdir() if RunDir(p).config.is_file())
    assert runs == ["stiefel_fixed-radam-s0_disc.tau=0.5", "stiefel_fixed-radam-s0_disc.tau=2"]
    groups = {yaml.safe_load(RunDir(sweep / r).config.read_text())["wandb"]["group"] for r in runs}
    assert groups == {"shape/stiefel_fixed-radam_disc.tau=0.5", "shape/stiefel_fixed-radam_disc.tau=2"}
    taus = {yaml.safe_load(RunDir(sweep / r).config.read_text())["disc"]["tau"] for r in runs}
    assert taus == {0.5, 2.0}


@pytest.mark.slow
def test_two_job_sweep_through_submitit_local_then_report(tmp_path, capsys):
    args = ["train", "-m", *fast(tmp_path, 2, "name=sub"), "disc=none,sn",
            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]
    assert main(args) == 0
    sweep = tmp_path / "runs" / "sub"
    for name in ("none-radam-s0", "sn-radam-s0"):
        assert loss_steps(sweep / name) == [1, 2]
        assert (sweep / name / ".hydra" / "config.yaml").is_file()
    # each job ran in its own submitit process, whose logs name the job
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2
    assert main(["report", str(sweep)]) == 0
    report = (sweep / "report.md").read_text()
    assert "| none " in report and "| sn " in report


def test_joblib_launcher_runs_two_jobs_at_a_time_with_the_basic_launchers_numbers(tmp_path):
    """hydra/launcher=joblib (two worker processes that stay up between jobs, the studies' way to use
    2 cores) gives every run exactly the records the in-process basic launcher gives it."""
    sweep = ["train", "-m", "disc=none,sn", "train.seed=0,1"]
    assert main([*sweep, *fast(tmp_path, 2, "name=parallel"), "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2"]) == 0
    assert main([*sweep, *fast(tmp_path, 2, "name=serial")]) == 0
    names = [f"{disc}-radam-s{seed}" for disc in ("none", "sn") for seed in (0, 1)]
    for name in names:
        parallel, serial = (read_metrics(tmp_path / "runs" / study / name) for study in ("parallel", "serial"))
        assert [r["step"] for r in parallel if "loss/d" in r] == [1, 2]
        assert without_timing(parallel) == without_timing(serial)


def without_timing(rows):
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]


# --------------------------------------------------------------------------------------- launchers


def test_slurm_preset_composes_with_hydra_submitit_launcher():
    launcher = hydra_settings("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                              "hydra.launcher.account=lab")["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["partition"], launcher["account"], launcher["gpus_per_node"]) == ("gpu", "lab", 1)
    assert launcher["array_parallelism"] == 16 and launcher["max_num_timeout"] > 0


@pytest.mark.parametrize("override,named", [
    ("hydra.launcher.gpus_per_node=-1", "gpus_per_node=-1"),
    ("hydra.launcher.timeout_min=0", "timeout_min=0"),
    ("hydra.launcher.array_parallelism=0", "array_parallelism=0"),
])
def test_bad_slurm_settings_stop_before_anything_is_submitted(tmp_path, stops_in_one_line, override, named):
    stops_in_one_line(["train", "-m", *fast(tmp_path, 1), "hydra/launcher=submitit_slurm", override], named)
    assert not (tmp_path / "runs").exists()


def test_slurm_without_sbatch_is_refused_in_one_line(tmp_path, stops_in_one_line):
    stops_in_one_line(["train", "-m", *fast(tmp_path, 1), "hydra/launcher=slurm"], "sbatch is not on PATH")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ preemption


def _start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "-m", "stiefel_gan", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run_dir: Path, process: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (run_dir / "metrics.jsonl").is_file() and any(s >= step for s in loss_steps(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} in {timeout} s")


@pytest.mark.slow
def test_preemption_checkpoints_on_sigterm_and_resume_auto_continues_the_same_directory(tmp_path):
    args = [*fast(tmp_path, 400, "name=pre", "train.checkpoint_every=5"), "resume=auto"]
    run_dir = tmp_path / "runs" / "pre" / "sn-radam-s0"

    # 1. killed outright between two checkpoints: what was logged after the last one is redone
    first = _start(args, tmp_path)
    _wait_for_step(run_dir, first, 7)
    first.kill()
    first.communicate()  # reaps it and closes its pipes
    killed_at = torch.load(RunDir(run_dir).checkpoint, weights_only=False)["step"]
    logged_before_kill = loss_steps(run_dir)[-1]
    # (the kill may land right after a checkpoint, with nothing logged past it)
    assert killed_at % 5 == 0 and 5 <= killed_at <= logged_before_kill

    # 2. the same command continues that directory; SIGTERM (Slurm's preemption) ends the current
    #    step, writes a checkpoint of exactly that step and says how to continue
    second = _start(args, tmp_path)
    _wait_for_step(run_dir, second, logged_before_kill + 3)  # past the killed process's rows
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM
    (line,) = [line for line in err.splitlines() if "SIGTERM" in line]
    assert "resume=auto" in line
    stopped_at = torch.load(RunDir(run_dir).checkpoint, weights_only=False)["step"]
    assert stopped_at == loss_steps(run_dir)[-1] > killed_at

    # 3. and again to the end: one directory, every step logged exactly once
    third = _start([*args, "train.steps=" + str(stopped_at + 3)], tmp_path)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert loss_steps(run_dir) == list(range(1, stopped_at + 4))
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["sn-radam-s0"]


@pytest.mark.slow
def test_multirun_of_the_installed_package_finds_the_checked_sweeper(tmp_path):
    """``pip install -e .`` then ``stiefel-gan train -m`` from any directory: Hydra's plugin scan must see
    the checked sweeper through the install itself, not because the checkout is on sys.path (Note
    [plugins in an editable install])."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    done = subprocess.run([sys.executable, "-m", "stiefel_gan", "train", "-m", *fast(tmp_path, 1),
                           "train.seed=0,1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Unknown plugin class" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "default").iterdir() if p.is_dir()) == \
        ["sn-radam-s0", "sn-radam-s1"]

"""How studies are launched and how they end.

- Every run is built once, by the process that trains it, whichever command starts it (``train``,
  ``train -m``, ``compare`` in this process or in joblib workers): counted by wrapping the real
  builders (tests/constructions.py).
- A study survives one bad run (a real divergence, a bug): the others finish, ``status.json``, the W&B
  offline run (read back from its files) and the report say what happened, the exit status is 1.
- A signal stops a parallel study (real signals to real joblib workers): every running run ends its
  step with its checkpoint, the jobs not started do not start, the exit status is 128 + signal.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from constructions import BUILDERS, counting_site, install, read_counts
from wandb_records import read_offline_run

from stiefel_gan.commands.cli import main
from stiefel_gan.config.compose import JobFailed
from stiefel_gan.config.paths import RunDir
from stiefel_gan.run.records import read_metrics, read_status

# digits (so that the digits feature extractor is built), the smallest standard CNN, two steps
TINY = ["model.g_width=4", "model.d_width=4", "model.z_dim=8", "train.steps=2", "train.batch_size=8",
        "train.log_every=1", "train.sample_every=2", "train.checkpoint_every=2", "train.n_grid_samples=4",
        "train.progress=false", "wandb.mode=disabled", "metrics.n_samples=100", "metrics.geometry_score=false",
        "metrics.diagnostics_every=0"]
# the cheapest real runs: an MLP pair on the 2-D ring, quality at the end only
FAST = ["data=ring8", "data.n_samples=64", "model=mlp", "model.g_width=8", "model.d_width=8",
        "train.batch_size=8", "train.log_every=1", "train.sample_every=100000", "train.checkpoint_every=100000",
        "train.n_grid_samples=4", "train.progress=false", "wandb.mode=disabled", "metrics.every=0",
        "metrics.n_samples=64", "metrics.geometry_score=false", "metrics.diagnostics_every=0"]


# ------------------------------------------------------------------------------ each run built once


@pytest.fixture
def constructions(monkeypatch) -> Counter:
    counts: Counter = Counter()
    install(lambda kind: counts.update([kind]), setattr_=monkeypatch.setattr)
    return counts


def each(runs: int) -> dict[str, int]:
    """``runs`` constructions of every kind: one dataset, G and D pair and evaluator per run."""
    return {kind: runs for kind in BUILDERS}


def test_train_and_a_sweep_build_each_run_once(tmp_path, constructions):
    out = f"out_dir={tmp_path}"
    assert main(["train", *TINY, out, "name=one"]) == 0
    assert dict(constructions) == each(1)
    constructions.clear()
    assert main(["train", "-m", *TINY, out, "name=sweep", "disc=sn,none"]) == 0
    assert dict(constructions) == each(2)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if RunDir(p).is_run()) == \
        ["none-radam-s0", "sn-radam-s0"]


#: what compare's report builds once itself: the data and evaluator of the headline's calibration floor
#: (stiefel_gan.report.floor), no generator and no discriminator
FLOOR_BUILDS = {"dataset": 1, "feature_extractor": 1}


def test_compare_builds_each_run_once(tmp_path, constructions):
    assert main(["compare", *TINY, f"out_dir={tmp_path}", "compare.variants=[sn,stiefel_fixed]",
                 "compare.jobs=1"]) == 0
    assert dict(constructions) == dict(Counter(each(2)) + Counter(FLOOR_BUILDS))


@pytest.mark.slow
def test_parallel_compare_builds_each_run_once_in_its_worker(tmp_path):
    """compare.jobs=2: two joblib workers, each building its own run; the command itself builds only its
    report's floor."""
    count_file = tmp_path / "counts.txt"
    env = counting_site(tmp_path / "site", count_file)
    done = subprocess.run([sys.executable, "-m", "stiefel_gan", "compare", *TINY, f"out_dir={tmp_path / 'runs'}",
                           "compare.variants=[sn,stiefel_fixed]", "compare.jobs=2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = read_counts(count_file)
    assert Counter(kind for _, kind in counts) == Counter(each(2)) + Counter(FLOOR_BUILDS)
    # each worker built the whole of one run (a dataset, a G and D pair, an evaluator), the command its floor
    by_process = Counter(pid for pid, _ in counts)
    assert sorted(by_process.values()) == sorted([len(BUILDERS)] * 2 + [sum(FLOOR_BUILDS.values())])
    (compare_dir,) = (tmp_path / "runs" / "compare").iterdir()
    assert sorted(p.name for p in compare_dir.iterdir() if RunDir(p).is_run()) == ["sn-s0", "stiefel_fixed-s0"]


def test_a_study_stopped_by_a_stop_file_another_sweep_removed_ends_in_lines_not_a_traceback(tmp_path):
    """Two sweeps into one study directory share its stop file: a signal to one stops the other's running
    job and its next ones, and a sweep started there later removes the file before the stopped one ends
    (seen on 2026-12-02: `ValueError: None is not a valid Signals` from the sweeper's last line)."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra_plugins.stiefel_gan_sweeper.checked_sweeper import study_ending

    def ended(status, failure=None):
        return JobReturn(status=status, _return_value=failure)

    stopped = "SIGTERM stopped the run at step 3906 of 5000"
    returns = [[ended(JobStatus.COMPLETED, "done"),
                ended(JobStatus.FAILED, JobFailed(str(tmp_path / "run-s10"), "interrupted", stopped)),
                ended(JobStatus.FAILED, JobFailed(str(tmp_path / "run-s11"), "not started", "SIGTERM stopped the study")),
                ended(JobStatus.FAILED, JobFailed(str(tmp_path / "run-s12"), "not started", "SIGTERM stopped the study"))]]
    lines, exit_status = study_ending(4, returns, None, tmp_path)
    assert lines == [f"stiefel-gan: {tmp_path / 'run-s10'}: interrupted: {stopped}",
                     f"stiefel-gan: 2 of 4 jobs not started: a stop request stopped the study (its file "
                     f"{tmp_path / '.stop'} is gone: another sweep into this directory wrote it, and a later one "
                     "removed it)"]
    assert exit_status == 1
    # the file still there: the signal it names, and 128 + signal
    lines, exit_status = study_ending(4, returns, int(signal.SIGTERM), tmp_path)
    assert lines[-1] == "stiefel-gan: 2 of 4 jobs not started: SIGTERM stopped the study" and exit_status == 143
    assert study_ending(1, [returns[0][:1]], None, tmp_path) == ([], 0)


# ------------------------------------------------------------------------------ one bad run in a study


def _break_evaluation(monkeypatch, failing) -> None:
    """Make ``SampleQuality`` raise (a bug) in the runs for which ``failing(cfg)`` holds."""
    from stiefel_gan.measure.quality import SampleQuality

    evaluate = SampleQuality.__call__

    def broken(self, generator, final=False):
        if failing(self.cfg):
            raise ZeroDivisionError("a bug in one job's evaluation")
        return evaluate(self, generator, final)

    monkeypatch.setattr(SampleQuality, "__call__", broken)


def test_a_diverged_job_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys):
    """RSGD at lr_d=1e5 sends D's weights to inf at once: a real divergence, in the middle of three jobs."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user settings or credentials
    rates = ["0.001", "100000.0", "0.01"]
    assert main(["train", "-m", *FAST, f"out_dir={tmp_path}", "name=nan", "train.steps=20", "wandb.mode=offline",
                 "disc=none", "optim=rsgd", "optim.momentum=0.0", f"optim.lr_d={','.join(rates)}"]) == 1
    err = capsys.readouterr().err
    runs = {rate: tmp_path / "nan" / f"none-rsgd-s0_optim.lr_d={rate}" for rate in rates}
    statuses = {rate: read_status(run_dir) for rate, run_dir in runs.items()}
    assert statuses["0.001"] == statuses["0.01"] == {"status": "finished", "reason": "reached train.steps=20",
                                                      "step": 20}
    diverged = statuses["100000.0"]
    assert diverged["status"] == "diverged" and "is nan at step" in diverged["reason"]
    assert diverged["step"] == int(diverged["reason"].split("at step ")[1].split(";")[0]) < 20
    # at the end, one line names the job that did not finish and its status
    (line,) = [line for line in err.splitlines() if line.startswith(f"stiefel-gan: {runs['100000.0']}")]
    assert line == f"stiefel-gan: {runs['100000.0']}: diverged: {diverged['reason']}"
    for rate, run_dir in runs.items():
        summary = read_offline_run(run_dir).summary
        assert (summary["status"], summary["status_step"]) == (statuses[rate]["status"], statuses[rate]["step"])

    assert main(["report", str(tmp_path / "nan")]) == 0
    report = (tmp_path / "nan" / "report.md").read_text()
    assert f"| {runs['100000.0'].name} | none optim.lr_d=100000.0 | 0 | diverged | {diverged['step']} |" in report
    assert "3 run(s) in 3 variant(s)" in report and "1 did not finish" in report
    assert "none optim.lr_d=100000.0 has 0 of 1 seeds; 1 diverged" in report


def test_a_bug_in_one_job_keeps_its_traceback_and_the_verdicts_count_the_seeds_left(tmp_path, monkeypatch, capsys):
    """sn and none over three seeds; none's seed 1 meets a bug in its evaluation. The other five
    runs finish, and the report's n and verdicts say none has 2 of 3 seeds."""
    _break_evaluation(monkeypatch, lambda cfg: cfg.disc.kind == "none" and cfg.train.seed == 1)
    assert main(["train", "-m", *FAST, f"out_dir={tmp_path}", "name=bug", "train.steps=3",
                 "disc=sn,none", "train.seed=0,1,2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug in one job's evaluation" in err
    broken = tmp_path / "bug" / "none-radam-s1"
    assert read_status(broken) == {"status": "failed", "step": 3,
                                   "reason": "ZeroDivisionError: a bug in one job's evaluation"}
    assert f"stiefel-gan: {broken}: failed: ZeroDivisionError: a bug in one job's evaluation" in err.splitlines()
    others = [d for d in (tmp_path / "bug").iterdir() if RunDir(d).is_run() and d != broken]
    assert len(others) == 5 and all(read_status(d)["status"] == "finished" for d in others)

    assert main(["report", str(tmp_path / "bug")]) == 0
    report = (tmp_path / "bug" / "report.md").read_text()
    assert "| none-radam-s1 | none | 1 | failed | 3 | ZeroDivisionError: a bug in one job's evaluation |" in report
    quality = [line for line in report.splitlines() if line.startswith("| none |")][0].split(" | ")
    assert quality[1] == "2 (2 of 3 seeds; 1 failed)"
    assert quality[-1].endswith("(none: 2 of 3 seeds; 1 failed) |")


def test_compare_reports_a_failed_run_and_exits_1(tmp_path, monkeypatch, capsys):
    _break_evaluation(monkeypatch, lambda cfg: cfg.disc.kind == "stiefel")
    assert main(["compare", *TINY, f"out_dir={tmp_path}", "compare.variants=[sn,stiefel_fixed]",
                 "compare.jobs=1"]) == 1
    (compare_dir,) = (tmp_path / "compare").iterdir()
    assert f"stiefel-gan: {compare_dir / 'stiefel_fixed-s0'}: failed: ZeroDivisionError" in capsys.readouterr().err
    report = (compare_dir / "report.md").read_text()
    assert "| stiefel_fixed-s0 | stiefel_fixed | 0 | failed | 2 |" in report and "| sn | 1 |" in report
    for run in ("sn-s0", "stiefel_fixed-s0"):  # Hydra's records, as in every train -m run
        assert (compare_dir / run / ".hydra" / "overrides.yaml").is_file()


def test_a_failed_job_crosses_a_process_boundary_whole():
    """A joblib worker sends its JobFailed back through pickle: the sweeper's line needs all of it."""
    failed = pickle.loads(pickle.dumps(JobFailed("runs/x/sn-s0", "diverged", "loss_d is nan at step 3")))
    assert (failed.job, failed.status, failed.reason) == ("runs/x/sn-s0", "diverged", "loss_d is nan at step 3")
    assert str(failed) == "runs/x/sn-s0: diverged: loss_d is nan at step 3"


# ------------------------------------------------------------------------------ a signal stops a study


def _logged_steps(run_dir: Path) -> list[int]:
    if not RunDir(run_dir).metrics.is_file():
        return []
    return [row["step"] for row in read_metrics(run_dir) if "loss/d" in row]


def _start_study(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    """``stiefel-gan train -m`` in a session of its own, as a terminal would run it: its process group
    is the command and its workers, and nothing else."""
    return subprocess.Popen([sys.executable, "-m", "stiefel_gan", "train", "-m", *FAST, f"out_dir={tmp_path}",
                             *overrides], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_until_training(process: subprocess.Popen, run_dirs: list[Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all(len(_logged_steps(d)) >= 3 for d in run_dirs):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"not all of {run_dirs} trained within {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("signum,to_group,launcher", [(signal.SIGINT, True, "joblib"),
                                                      (signal.SIGTERM, False, "joblib"),
                                                      (signal.SIGINT, True, "basic")],
                         ids=["ctrl-c to the terminal's group", "sigterm to the command alone",
                              "ctrl-c to a study in the command's own process"])
def test_a_signal_stops_a_study_with_every_running_run_checkpointed(tmp_path, signum, to_group, launcher):
    """joblib: two workers train sn and none while wc waits. Ctrl-C (every process of the group gets it)
    or a SIGTERM to the command alone (its workers see only the study's stop file): both runs end their
    step and write its checkpoint, wc never starts, the command exits 128 + signal. basic: the command
    trains sn itself; none and wc never start."""
    study = tmp_path / "stop"
    process = _start_study(tmp_path, "name=stop", "train.steps=1000000", "disc=sn,none,wc",
                           f"hydra/launcher={launcher}", *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []))
    running = [study / "sn-radam-s0", study / "none-radam-s0"][:2 if launcher == "joblib" else 1]
    _wait_until_training(process, running)
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-3000:]
    for run_dir in running:
        status = read_status(run_dir)
        checkpoint = torch.load(RunDir(run_dir).checkpoint, weights_only=False)
        assert status["status"] == "interrupted" and status["step"] == checkpoint["step"] == _logged_steps(run_dir)[-1]
        assert f"{run_dir}: interrupted: {signal.Signals(signum).name} stopped the run" in err
    waiting = 3 - len(running)
    assert not any(RunDir(study / f"{disc}-radam-s0").metrics.exists() for disc in ("none", "wc")[-waiting:])
    assert f"{waiting} of 3 jobs not started: {signal.Signals(signum).name} stopped the study" in err
    assert not (study / ".stop").exists()  # a study run again into this directory starts

"""Runs that fail well: a collapsed or diverged generator's final evaluation is bounded in time and says
why a metric is missing."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_run
from test_architecture import _cifar_overrides
from torch import nn
from wandb_records import read_offline_run

from stiefel_gan.config.compose import compose_config
from stiefel_gan.config.paths import RunDir
from stiefel_gan.data.datasets import build_dataset, data_shape
from stiefel_gan.measure.quality import SampleQuality, real_subset
from stiefel_gan.measure.table import BY_KEY, compared_keys
from stiefel_gan.run.records import read_metric_status, read_metrics
from stiefel_gan.run.runner import run

#: Wall-clock bound on one final evaluation of a collapsed generator on a 2-core machine (the real
#: samples' Geometry Score, which does not depend on the generator, is most of it).
COLLAPSED_EVALUATION_SECONDS = 60

DATASET_OVERRIDES = {"digits": ["experiment=compare"], "ring8": ["data=ring8", "model=mlp", "data.n_samples=512"],
                     "grid25": ["data=grid25", "model=mlp", "data.n_samples=512"]}
#: The final evaluation at its default sample count and landmarks, with fewer landmark draws: the cost a
#: collapsed generator could blow up is per draw (the witness complex's size), not the number of draws.
EVALUATION = ["metrics.geometry_score=true", "metrics.gs_n=20"]


class CollapsedGenerator(nn.Module):
    """Every sample is ``sample``: a generator that has collapsed to one output (or to NaN)."""

    def __init__(self, sample: torch.Tensor):
        super().__init__()
        self.register_buffer("sample", sample)

    def sample_z(self, n, generator, device):
        return torch.randn(n, 4, generator=generator).to(device)

    def forward(self, z):
        return self.sample.expand(len(z), *self.sample.shape).clone()


def _config_and_dataset(dataset, tmp_path, monkeypatch):
    if dataset == "cifar10":
        overrides = [*_cifar_overrides(tmp_path, monkeypatch), "metrics.n_samples=1000"]
    else:
        overrides = DATASET_OVERRIDES[dataset]
    cfg = compose_config([*overrides, *EVALUATION])
    data = build_dataset(cfg.data.name, root=cfg.data.root, image_size=cfg.data.image_size, seed=0,
                         n_samples=cfg.data.n_samples)
    return cfg, data


@pytest.mark.parametrize("dataset", ["digits", "ring8", "grid25", "cifar10"])
@pytest.mark.parametrize("collapse", ["identical", "nan"])
def test_final_evaluation_of_a_collapsed_generator_is_bounded_and_says_what_is_missing(dataset, collapse, tmp_path,
                                                                                      monkeypatch):
    cfg, data = _config_and_dataset(dataset, tmp_path, monkeypatch)
    one_real = real_subset(data, 1)[0]
    sample = one_real if collapse == "identical" else torch.full(data_shape(cfg.data.name, cfg.data.image_size),
                                                                 math.nan)
    quality = SampleQuality(cfg, data, torch.device("cpu"), tmp_path)
    started = time.perf_counter()
    evaluation = quality(CollapsedGenerator(sample), final=True)
    elapsed = time.perf_counter() - started
    assert elapsed < COLLAPSED_EVALUATION_SECONDS, f"{elapsed:.0f} s"

    scores = evaluation.scores
    assert set(scores) <= set(BY_KEY) and "quality/geometry_score" in scores
    assert scores["quality/geometry_gamma"] > 0  # a setting: known whatever the samples are
    groups = {"digits": ("digits_features", "class_coverage"), "ring8": ("mode_metrics",),
              "grid25": ("mode_metrics",), "cifar10": ("fidelity",)}[dataset] + ("geometry",)
    compared = [key for group in groups for key in compared_keys(group, dataset)]
    if collapse == "nan":
        assert all(math.isnan(scores[key]) for key in compared)
        assert {key: error.reason for key, error in evaluation.unavailable.items()} == \
            dict.fromkeys(compared, "nonfinite")
        return
    assert evaluation.unavailable == {}
    # one real sample repeated: a point mass. Its RLT curve is (1, 0, ...) (no hole ever), so the score is
    # that of the real cloud's curve against it; every other metric is a number or a documented NaN
    assert math.isfinite(scores["quality/geometry_score"])
    if dataset == "digits":
        assert scores["quality/classes_covered"] == 1
        assert scores["quality/class_kl"] == pytest.approx(math.log(10))
        assert all(math.isfinite(scores[key]) for key in compared_keys("digits_features", "digits"))
        assert scores["quality/coverage"] < 0.05  # one sample's worth of real neighbourhoods
    elif dataset == "cifar10":
        assert all(math.isfinite(scores[key]) for key in compared)
    else:  # a real point lies within 3 std of its mode: one mode, all high quality
        assert scores["quality/modes_covered"] == 1 and scores["quality/high_quality_fraction"] == 1
        assert scores["quality/mode_kl"] == pytest.approx(math.log(8 if dataset == "ring8" else 25))


def test_a_run_whose_final_samples_are_nan_logs_nan_with_its_reason_and_finishes(tmp_path, monkeypatch, capsys):
    """The runner's side: NaN in metrics.jsonl, the reason in metric_status.jsonl and the W&B summary,
    one line per computation on stderr; the run still ends normally (its checkpoint and report stand)."""
    real_samples = SampleQuality.samples

    def nan_at_the_end(self, generator, n):
        samples = real_samples(self, generator, n)
        return torch.full_like(samples, math.nan)

    monkeypatch.setattr(SampleQuality, "samples", nan_at_the_end)
    cfg = compose_config([*tiny_run(2, "experiment=compare", "metrics.geometry_score=true", "metrics.gs_n=4",
                                    "metrics.gs_landmarks=8"), "metrics.n_samples=64", "wandb.mode=offline",
                          f"out_dir={tmp_path / 'runs'}", "name=nan", "disc=sn"])
    run_dir = run(cfg)
    (final,) = [row for row in read_metrics(run_dir) if "quality/digits_fd" in row]
    assert final["step"] == 2 and math.isnan(final["quality/digits_fd"]) and math.isnan(final["quality/geometry_score"])
    expected = {f"{key}_status": "nonfinite" for key in
                (*compared_keys("digits_features", "digits"), *compared_keys("class_coverage", "digits"),
                 *compared_keys("geometry", "digits"))}
    assert read_metric_status(run_dir) == [{"step": 2, **expected}]
    summary = read_offline_run(run_dir / "wandb").summary
    assert {key: summary[key] for key in expected} == expected
    lines = [line for line in capsys.readouterr().err.splitlines() if "unavailable, logged as NaN" in line]
    assert len(lines) == 3 and all(line.startswith("stiefel-gan: step 2: quality/") for line in lines)


# ------------------------------------------------------------------------ signals in every phase

REPO = Path(__file__).resolve().parent.parent

#: A test hook, imported by ``site`` at the subprocess's start: it makes one phase of the run slow (a sleep,
#: which a signal handler interrupts like any Python code) and writes a marker file when the phase begins.
SLOW_PHASE_HOOK = '''
import os, time

PHASE, MARKER = os.environ["SLOW_PHASE"], os.environ["SLOW_PHASE_MARKER"]
SLEEP = float(os.environ["SLOW_PHASE_SECONDS"])


def enter():
    with open(MARKER, "w") as handle:
        handle.write(PHASE)
    time.sleep(SLEEP)


if PHASE == "training":  # the third generator update
    import stiefel_gan.gan.train as loop
    real_step, calls = loop.generator_step, []
    def generator_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            enter()
        return real_step(*args, **kwargs)
    loop.generator_step = generator_step
elif PHASE == "checkpoint write":  # the second checkpoint: a slow disk, the write then completes
    import torch
    real_save, writes = torch.save, []
    def save(obj, f, *args, **kwargs):
        if str(getattr(f, "name", f)).endswith(".tmp"):
            writes.append(1)
            if len(writes) == 2:
                enter()
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
elif PHASE in ("evaluation", "final evaluation"):
    from stiefel_gan.measure.quality import SampleQuality
    real_call = SampleQuality.__call__
    def call(self, generator, final=False):
        if final == (PHASE == "final evaluation"):
            enter()
        return real_call(self, generator, final)
    SampleQuality.__call__ = call
elif PHASE == "diagnostics":  # the second diagnosis, at step 2 (the first is D at step 0)
    from stiefel_gan.measure.diagnostics import DiscriminatorDiagnostics
    real_diagnose, diagnoses = DiscriminatorDiagnostics.__call__, []
    def diagnose(self, *args, **kwargs):
        diagnoses.append(1)
        if len(diagnoses) == 2:
            enter()
        return real_diagnose(self, *args, **kwargs)
    DiscriminatorDiagnostics.__call__ = diagnose
elif PHASE == "sample grid":
    import stiefel_gan.run.runner as runner
    real_save_samples = runner._save_samples
    def save_samples(*args, **kwargs):
        enter()
        return real_save_samples(*args, **kwargs)
    runner._save_samples = save_samples
'''

#: The run every signal test stops: a tiny MLP on the ring, a checkpoint every step, each periodic phase
#: first at step 2, the end at step 4.
SIGNAL_RUN = ["data=ring8", "data.n_samples=64", "model=mlp", "model.g_width=8", "model.d_width=8",
              "train.batch_size=8", "train.log_every=1", "train.steps=4", "train.checkpoint_every=1",
              "train.sample_every=2", "metrics.every=2", "metrics.diagnostics_every=2", "train.n_grid_samples=4",
              "train.progress=false", "wandb.mode=disabled", "metrics.n_samples=64", "metrics.geometry_score=false",
              "resume=auto", "name=sig"]
#: From the signal to the process's exit (the interpreter's teardown included).
EXIT_SECONDS = 10


def _train(args, cwd, slow_phase=None, seconds=600.0, marker=None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    if slow_phase is not None:
        hook_dir = cwd / "hook"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "sitecustomize.py").write_text(SLOW_PHASE_HOOK)
        env.update(PYTHONPATH=f"{hook_dir}{os.pathsep}{REPO}", SLOW_PHASE=slow_phase,
                   SLOW_PHASE_MARKER=str(marker), SLOW_PHASE_SECONDS=str(seconds))
    return subprocess.Popen([sys.executable, "-m", "stiefel_gan", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _finishes(process: subprocess.Popen, timeout: float = 300) -> None:
    """The process ends with exit status 0 (its pipes read to the end and closed)."""
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]


def _wait_for(marker: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"the slow phase did not begin within {timeout} s"
        time.sleep(0.05)


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its timings (the one thing that differs between two identical runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in read_metrics(run_dir)]


def _checkpoint_step(run_dir: Path) -> int:
    return torch.load(RunDir(run_dir).checkpoint, weights_only=False)["step"]


@pytest.fixture(scope="module")
def uninterrupted_records(tmp_path_factory) -> list[dict]:
    """The records of :data:`SIGNAL_RUN` trained without a signal."""
    here = tmp_path_factory.mktemp("uninterrupted")
    _finishes(_train([*SIGNAL_RUN, f"out_dir={here / 'runs'}"], here))
    return _records(here / "runs" / "sig" / "sn-radam-s0")


#: phase -> the step of the checkpoint on disk when the run stops: a step (3) or a checkpoint write (2)
#: is completed and saved; an evaluation, the diagnostics or a sample grid (all at step 2, the final
#: evaluation at 4) save nothing, so the checkpoint of the step before stands.
STOPPED_CHECKPOINT = {"training": 3, "checkpoint write": 2, "sample grid": 1, "evaluation": 1, "diagnostics": 1,
                      "final evaluation": 3}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda v: v.name)
@pytest.mark.parametrize("phase", list(STOPPED_CHECKPOINT), ids=lambda v: v.replace(" ", "_"))
def test_a_signal_in_any_phase_stops_the_run_within_seconds_and_leaves_it_resumable(phase, signum, tmp_path,
                                                                                     uninterrupted_records):
    marker = tmp_path / "entered"
    seconds = 3.0 if phase in ("training", "checkpoint write") else 600.0  # a step or a write completes
    args = [*SIGNAL_RUN, f"out_dir={tmp_path / 'runs'}"]
    process = _train(args, tmp_path, slow_phase=phase, seconds=seconds, marker=marker)
    _wait_for(marker, process)
    signalled = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - signalled
    assert took < EXIT_SECONDS + (seconds if seconds < 60 else 0), f"{took:.1f} s"
    assert process.returncode == 128 + signum, err[-3000:]
    (line,) = [line for line in err.splitlines() if "stopped the run" in line]
    assert signal.Signals(signum).name in line and "resume=auto" in line
    run_dir = tmp_path / "runs" / "sig" / "sn-radam-s0"
    if phase in ("training", "checkpoint write"):  # completed, then saved
        assert "during its" not in line and f"checkpoint in {RunDir(run_dir).checkpoint}" in line
    else:
        assert f"during its {phase} at step" in line and "saved nothing" in line
    assert _checkpoint_step(run_dir) == STOPPED_CHECKPOINT[phase]
    assert not list(RunDir(run_dir).checkpoint.parent.glob(".*.tmp"))

    # the same command continues it and ends with the records of an uninterrupted run
    _finishes(_train(args, tmp_path))
    assert _records(run_dir) == uninterrupted_records


@pytest.mark.slow
def test_a_second_signal_ends_the_process_at_once(tmp_path):
    """The first SIGTERM waits for the step to finish (here: a step that takes a minute); the second one
    does not wait."""
    marker = tmp_path / "entered"
    process = _train([*SIGNAL_RUN, f"out_dir={tmp_path / 'runs'}"], tmp_path, slow_phase="training",
                     seconds=60.0, marker=marker)
    _wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # the step is still running
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert time.monotonic() - signalled < 5
    assert process.returncode == -signal.SIGTERM  # ended by the signal itself


# ------------------------------------------------------------------- a checkpoint to fall back on

#: A digits run that checkpoints at steps 2 and 4 (``previous.pt`` and ``last.pt``).
FALLBACK_RUN = tiny_run(4, "experiment=compare", "train.checkpoint_every=2", "metrics.every=2", "metrics.n_samples=64",
                        "name=fb", "disc=sn")


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_each_write_keeps_the_checkpoint_before_it(tmp_path):
    run_dir = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path}"]))
    paths = RunDir(run_dir)
    assert _checkpoint_step(run_dir) == 4
    assert torch.load(paths.previous_checkpoint, weights_only=False)["step"] == 2


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one_and_resumes_exactly(tmp_path, capsys):
    run_dir = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path / 'a'}"]))
    paths = RunDir(run_dir)
    _corrupt(paths.checkpoint)
    capsys.readouterr()
    resumed = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path / 'a'}", "train.steps=6", f"resume={run_dir}"]))
    assert resumed == run_dir
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "resuming from" in line]
    assert line.startswith(f"stiefel-gan: {paths.checkpoint} is unreadable: ")  # then torch's error type
    assert line.endswith(f"; resuming from {paths.previous_checkpoint} (step 2)")
    assert paths.unreadable_checkpoint.is_file()  # set aside, not deleted
    # steps 3 and 4 were redone from step 2's checkpoint: the records are those of a run that went
    # straight from step 2 to 6 (the same run, interrupted only by the resume at step 2)
    straight = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path / 'b'}", "train.steps=6"]))
    steps = [row["step"] for row in read_metrics(run_dir) if "loss/d" in row]
    assert steps == [1, 2, 3, 4, 5, 6]
    ours = [row for row in _records(run_dir) if "loss/d" in row]
    theirs = [row for row in _records(straight) if "loss/d" in row]
    assert ours == theirs
    assert _checkpoint_step(run_dir) == 6


def test_no_readable_checkpoint_is_one_line_naming_both_files_and_never_suggests_deleting(tmp_path):
    run_dir = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path}"]))
    paths = RunDir(run_dir)
    _corrupt(paths.checkpoint)
    _corrupt(paths.previous_checkpoint)
    before = {p: p.read_bytes() for p in (paths.checkpoint, paths.previous_checkpoint)}
    done = subprocess.run([sys.executable, "-m", "stiefel_gan", "train", f"resume={run_dir}", "train.steps=6"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert str(paths.checkpoint) in line and str(paths.previous_checkpoint) in line
    assert "delete" not in line and "start a fresh run beside it" in line
    assert {p: p.read_bytes() for p in before} == before


# -------------------------------------------------------------------------------------- disk full

def test_a_checkpoint_write_that_fails_stops_the_run_and_keeps_the_checkpoints_before_it(tmp_path):
    """A real failed write: the run is resumed under a file-size limit (RLIMIT_FSIZE) that the small
    JSONL records fit in and a checkpoint does not, so the kernel fails the write (EFBIG), as a full disk
    fails it with ENOSPC."""
    import resource

    run_dir = run(compose_config([*FALLBACK_RUN, f"out_dir={tmp_path}"]))
    paths = RunDir(run_dir)
    kept = {p: p.read_bytes() for p in (paths.checkpoint, paths.previous_checkpoint)}
    limit = paths.checkpoint.stat().st_size // 2
    assert limit > 4 * paths.metrics.stat().st_size  # the records still fit

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "stiefel_gan", "train", f"resume={run_dir}", "train.steps=6"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300, preexec_fn=limit_file_size)
    assert done.returncode == 1, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("stiefel-gan:")]
    assert line == (f"stiefel-gan: checkpoint not written: writing {paths.checkpoint} failed (File too large); "
                    f"{paths.checkpoint} and {paths.previous_checkpoint} kept as they were")
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in kept} == kept
    assert not list(paths.checkpoint.parent.glob(".*.tmp"))

"""The runner end to end: real Hydra composition of the real configs (shrunk), real training steps,
real checkpoints, real W&B offline runs read back from their files."""

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_MODELS, tiny_run
from PIL import Image
from wandb_records import read_offline_run

from stiefel_gan.commands.cli import main
from stiefel_gan.config.compose import compose_config
from stiefel_gan.run.records import read_metrics, read_series
from stiefel_gan.run.runner import run
from stiefel_gan.run.tracker import Tracker

DISC_PRESETS = sorted(path.stem for path in (Path(__file__).resolve().parents[1] / "configs" / "disc").glob("*.yaml"))


def tiny(tmp_path, *overrides):
    """Two steps with D's diagnostics at the end, into ``tmp_path``."""
    return tiny_run(2, "metrics.diagnostics_every=2", f"out_dir={tmp_path}", *overrides)


def metric_rows(run_dir):
    """metrics.jsonl without wall-clock keys (the only ones allowed to differ between equal runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in read_metrics(run_dir)]


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("disc", DISC_PRESETS)
def test_every_disc_trains_with_every_model(tmp_path, disc, model):
    cfg = compose_config(tiny(tmp_path, f"disc={disc}", *TINY_MODELS[model]))
    run_dir = run(cfg)
    rows = [r for r in read_metrics(run_dir) if "loss/d" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss/d"]) and math.isfinite(r["loss/g"]) for r in rows)
    (quality,) = [r for r in read_metrics(run_dir) if any(k.startswith("quality/") for k in r)]
    assert quality["step"] == 2
    assert ("quality/modes_covered" if model == "mlp" else "quality/digits_fd") in quality
    layer_sigmas = {k: v for k, v in rows[-1].items() if k.startswith("sigma_max/")}
    assert layer_sigmas, "every D layer reports its largest singular value"
    if disc.startswith("stiefel") and disc != "stiefel_grid":
        # the curve's largest value is sigma = 1 in every layer, the final dense layer included
        assert all(v == pytest.approx(1.0, abs=1e-4) for v in layer_sigmas.values())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["step"] == 2 and checkpoint["config"]["disc"]["kind"] == cfg.disc.kind
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "samples" / "step_000002.png").is_file()
    spectra = json.loads((run_dir / "spectra" / "step_000002.json").read_text())
    assert set(spectra["layers"]) == {k.split("/", 1)[1] for k in layer_sigmas}
    diagnostics = {k: v for r in read_metrics(run_dir) for k, v in r.items()}
    if model != "resnet":  # the product of layer norms bounds a chain of layers only (residual sums are not one)
        assert diagnostics["lipschitz/lower_bound"] <= diagnostics["lipschitz/upper_bound"] * (1 + 1e-4)
    assert {row["key"] for row in read_series(run_dir)} >= {"spectrum/normalized"}


def test_stiefel_variants_replace_every_discriminator_layer(tmp_path):
    from stiefel_gan.data.datasets import data_shape
    from stiefel_gan.gan.builder import build_gan
    from stiefel_gan.manifold import stiefel_layers

    cfg = compose_config(tiny(tmp_path, "disc=stiefel_grid", *TINY_MODELS["standard_cnn"]))
    gan = build_gan(cfg, data_shape("digits", 16))
    names = [name for name, _ in stiefel_layers(gan.discriminator)]
    assert "fc" in names and len(names) == 8  # seven convs and the final dense layer
    # no plain layer is left (a Stiefel layer is itself an nn.Conv2d / nn.Linear: docs/layers.md)
    assert not any(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for m in gan.discriminator.modules())


def test_same_seed_same_numbers(tmp_path):
    overrides = tiny(tmp_path, "disc=stiefel_curve", "train.steps=3", *TINY_MODELS["standard_cnn"])
    first, second = run(compose_config(overrides)), run(compose_config(overrides))
    assert first != second  # a second run never overwrites the first
    assert metric_rows(first) == metric_rows(second)
    other = run(compose_config([*overrides, "train.seed=1"]))
    assert metric_rows(other) != metric_rows(first)


@pytest.mark.parametrize("disc,optim,decay", [("stiefel_grid", "radam", "constant"), ("sn", "radam", "linear"),
                                              ("stiefel_fixed", "rsgd", "linear"),
                                              ("gp", "radam", "constant")])  # gp: its interpolation weights resume too
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, disc, optim, decay):
    common = tiny(tmp_path, f"disc={disc}", f"optim={optim}", f"optim.lr_decay={decay}", "optim.n_dis=2",
                  "train.checkpoint_every=3",
                  "train.sample_every=3", "metrics.every=2", "train.steps=7", *TINY_MODELS["standard_cnn"])
    straight = run(compose_config([*common, "run_name=straight"]))

    original_log = Tracker.log

    def killed_after_step_4(self, step, scalars):  # the process dies after logging step 5's losses
        original_log(self, step, scalars)
        if step == 5 and "loss/d" in scalars:
            raise KeyboardInterrupt

    monkeypatch.setattr(Tracker, "log", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(compose_config([*common, "run_name=interrupted"]))
    monkeypatch.setattr(Tracker, "log", original_log)
    interrupted = tmp_path / "default" / "interrupted"
    assert torch.load(interrupted / "checkpoints" / "last.pt", weights_only=False)["step"] == 3
    assert main(["train", f"resume={interrupted}"]) == 0
    assert [r["step"] for r in metric_rows(interrupted) if "loss/d" in r] == list(range(1, 8))
    assert metric_rows(interrupted) == metric_rows(straight)


def test_linear_lr_decay_reaches_every_parameter_group(tmp_path):
    cfg = compose_config(tiny(tmp_path, "disc=stiefel_curve", "optim.lr_decay=linear", "train.steps=4",
                              "optim.lr_stiefel=0.1", "optim.lr_spectrum=0.01", *TINY_MODELS["standard_cnn"]))
    rows = [r for r in read_metrics(run(cfg)) if "loss/d" in r]
    for row in rows:  # update s of 4 runs at lr_0 (1 - (s - 1) / 4): 1, 3/4, 1/2, 1/4 of lr_0
        factor = 1 - (row["step"] - 1) / 4
        assert row["lr/g"] == pytest.approx(cfg.optim.lr_g * factor)
        d_rates = sorted(v for k, v in row.items() if k.startswith("lr/d_"))
        assert d_rates == pytest.approx(sorted(lr * factor for lr in (cfg.optim.lr_d, 0.1, 0.01)))


def test_resume_extends_a_finished_run(tmp_path, stops_in_one_line):
    common = tiny(tmp_path, "disc=stiefel_curve", *TINY_MODELS["standard_cnn"])
    run_dir = run(compose_config([*common, "train.steps=2"]))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # the choices as plain strings on disk
    assert saved["loss"]["name"] == "hinge" and saved["disc"]["learn"] == ["tau", "eps"]
    assert saved["wandb"]["mode"] == "disabled"
    stops_in_one_line(["train", f"resume={run_dir}", "train.steps=4", "wandb.mode=sometimes"],
                      "wandb.mode='sometimes' is not allowed: use one of auto, online, offline, disabled")
    assert main(["train", f"resume={run_dir}", "train.steps=4"]) == 0
    assert [r["step"] for r in read_metrics(run_dir) if "loss/d" in r] == [1, 2, 3, 4]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["step"] == 4


def test_resume_truncates_rows_logged_after_the_checkpoint(tmp_path):
    common = tiny(tmp_path, "disc=sn", "train.checkpoint_every=2", "train.steps=3", *TINY_MODELS["standard_cnn"])
    run_dir, reference = run(compose_config(common)), run(compose_config(common))
    with open(run_dir / "metrics.jsonl", "a") as f:  # a crash after step 4's log but before its checkpoint
        f.write(json.dumps({"step": 4, "loss/d": 0.0}) + "\n")
    for directory in (run_dir, reference):
        assert main(["train", f"resume={directory}", "train.steps=5"]) == 0
    assert metric_rows(run_dir) == metric_rows(reference)


def test_wandb_offline_run_reads_back(tmp_path):
    run_dir = run(compose_config([*tiny(tmp_path, "disc=sn", *TINY_MODELS["standard_cnn"]), "wandb.mode=offline",
                                  "name=wb", "wandb.tags=[mine]"]))
    record = read_offline_run(run_dir)
    # no study variant: the group is the experiment and a digest of everything but the seed
    assert record.group.startswith("wb/sn-radam-") and record.job_type == "wb" and record.name == run_dir.name
    assert {"sn", "radam", "baseline", "mine", "digits", "hinge"} <= set(record.tags)
    assert record.config["disc"]["kind"] == "sn" and record.config["train"]["steps"] == 2
    steps = [row["_step"] for row in record.history if "loss/d" in row]
    assert steps == [1, 2]
    local = read_metrics(run_dir)
    assert [row["loss/d"] for row in record.history if "loss/d" in row] == pytest.approx(
        [r["loss/d"] for r in local if "loss/d" in r])


def test_wandb_groups_differ_by_anything_but_the_seed(tmp_path):
    from stiefel_gan.config.naming import wandb_group

    base = tiny(tmp_path, "disc=stiefel_fixed", *TINY_MODELS["standard_cnn"])
    group = lambda *extra: wandb_group(compose_config([*base, *extra]))  # noqa: E731
    assert group("train.seed=0") == group("train.seed=1")
    assert group("disc.tau=0.5") != group("disc.tau=2")
    assert group("variant=smoke_sn", "train.seed=0") == group("variant=smoke_sn", "train.seed=3") == "default/smoke_sn"


def test_compare_writes_a_table_and_side_by_side_samples(tmp_path):
    assert main(["compare", *tiny(tmp_path), "train.steps=2"]) == 0
    (compare_dir,) = (tmp_path / "compare").iterdir()
    report = (compare_dir / "report.md").read_text()
    for variant in ("sn", "stiefel_fixed", "stiefel_curve", "stiefel_grid"):
        assert f"| {variant} " in report
    assert "loss/d" in report
    with Image.open(compare_dir / "samples.png") as samples:
        width, height = samples.size
    assert width > 3 * height  # four panels side by side


def test_parallel_compare_trains_what_the_sequential_one_does(tmp_path):
    """Note [parallel compare]: two worker processes, one thread each, give the records of one process
    running the same runs one after another with one thread."""
    overrides = [*tiny(tmp_path), "train.threads=1", "compare.variants=[sn,stiefel_curve]"]
    assert main(["compare", *overrides, "compare.jobs=1", "out_dir=" + str(tmp_path / "one")]) == 0
    assert main(["compare", *overrides, "compare.jobs=2", "out_dir=" + str(tmp_path / "two")]) == 0
    (one,), (two,) = (tmp_path / "one" / "compare").iterdir(), (tmp_path / "two" / "compare").iterdir()
    for name in ("sn-s0", "stiefel_curve-s0"):
        rows = metric_rows(two / name)
        assert any("quality/digits_fd" in row for row in rows)
        assert rows == metric_rows(one / name)
    assert "| stiefel_curve " in (two / "report.md").read_text()


def test_compare_rejects_a_non_positive_jobs_count_before_training(tmp_path, stops_in_one_line):
    stops_in_one_line(["compare", *tiny(tmp_path), "compare.jobs=0"], "compare.jobs=0")
    assert not (tmp_path / "compare").exists()


BAD_COMMANDS = [
    (["disc=foo"], "disc/foo"),
    (["disc.tua=1"], "tua"),
    (["train.steps=abc"], "train.steps"),
    (["optim.n_dis=0"], "optim.n_dis=0"),
    (["data.image_size=20"], "20"),
    (["disc=stiefel_fixed", "optim=adam"], "optim=adam"),
    (["disc=stiefel_fixed", "disc.tau=-1"], "tau=-1.0"),
    (["data=cifar10", "data.root=__ROOT__"], "CIFAR-10"),
    (["resume=__ROOT__/missing"], "missing"),
    (["experiment=nope"], "experiment='nope'"),  # optional groups: Hydra itself would skip a typo
    (["variant=smoke_snn"], "variant='smoke_snn'"),
    (["loss=wasserstein"], "loss/wasserstein"),
    (["train.seed=abc"], "could not be converted to Integer"),
    (["train.threads=0"], "train.threads=0"),
    (["loss.name=wgan"], "loss.name='wgan' is not allowed: use one of hinge, vanilla"),  # a typed choice
    (["model=resnet"], "data_shape=(1, 16, 16) is not allowed for model.arch='resnet'"),  # 16-px digits
]


@pytest.mark.parametrize("overrides,named", BAD_COMMANDS, ids=[b[1] for b in BAD_COMMANDS])
def test_bad_input_stops_before_training_with_one_line(tmp_path, stops_in_one_line, overrides, named):
    overrides = [o.replace("__ROOT__", str(tmp_path / "data")) for o in overrides]
    stops_in_one_line(["train", *tiny(tmp_path / "runs", *TINY_MODELS["standard_cnn"]), *overrides], named)
    assert not (tmp_path / "runs").exists(), "nothing is written for a bad config"


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, stops_in_one_line):
    first = run(compose_config(tiny(tmp_path, "disc=sn", *TINY_MODELS["standard_cnn"])))
    other = run(compose_config(tiny(tmp_path, "disc=stiefel_fixed", *TINY_MODELS["standard_cnn"])))
    (first / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    before = (first / "metrics.jsonl").read_bytes()
    stops_in_one_line(["train", f"resume={first}", "train.steps=4"], "disc.kind='stiefel'")
    assert (first / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_a_corrupt_checkpoint_and_keeps_it(tmp_path, stops_in_one_line):
    run_dir = run(compose_config(tiny(tmp_path, "disc=sn", *TINY_MODELS["standard_cnn"])))
    checkpoint = run_dir / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    damaged = checkpoint.read_bytes()
    line = stops_in_one_line(["train", f"resume={run_dir}", "train.steps=4"], f"{checkpoint} is unreadable",
                             "previous.pt is missing")
    assert "delete" not in line
    assert checkpoint.read_bytes() == damaged


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, stops_in_one_line):
    # RSGD with a learning rate of 1e5 sends D's weights to inf within a few steps: a real divergence
    overrides = tiny(tmp_path, "disc=none", "optim=rsgd", "optim.lr_d=1e5", "optim.momentum=0.0",
                     "train.steps=50", "train.checkpoint_every=1", *TINY_MODELS["standard_cnn"])
    err = stops_in_one_line(["train", *overrides], "at step", "last good checkpoint", status=1)
    (run_dir,) = (tmp_path / "default").iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    diverged_at = int(err.split("at step ")[1].split(";")[0])
    assert checkpoint["step"] == diverged_at - 1
    assert all(torch.isfinite(t).all() for t in checkpoint["discriminator"].values())


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(tmp_path):
    from stiefel_gan.gan.train import save_checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, {"step": 2, "unpicklable": lambda: None})
    assert torch.load(path, weights_only=False) == {"step": 1}


def test_scheduler_signal_checkpoints_the_current_step_then_goes_to_the_schedulers_handler(tmp_path, monkeypatch):
    """As under submitit: a Python handler owns SIGUSR2 (submitit requeues the job there). A real
    SIGUSR2 mid-run lets the step finish and checkpoint, then reaches that handler; resuming ends
    with every step logged once."""
    import os
    import signal

    from stiefel_gan.run.signals import RunInterrupted

    overrides = tiny(tmp_path, "disc=sn", "train.steps=6", "train.checkpoint_every=100", "run_name=pre",
                     *TINY_MODELS["standard_cnn"])
    run_dir = tmp_path / "default" / "pre"
    seen = []

    def scheduler(signum, frame):  # what submitit's handler sees when it requeues
        seen.append((signum, torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["step"]))

    original_log = Tracker.log

    def signal_at_step_3(self, step, scalars):
        original_log(self, step, scalars)
        if step == 3 and "loss/d" in scalars:
            os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, scheduler)
    try:
        monkeypatch.setattr(Tracker, "log", signal_at_step_3)
        with pytest.raises(RunInterrupted) as stopped:
            run(compose_config(overrides))
        monkeypatch.setattr(Tracker, "log", original_log)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(signal.SIGUSR2, 3)]
    assert stopped.value.exit_status == 128 + signal.SIGUSR2 and "resume=auto" in str(stopped.value)
    assert main(["train", f"resume={run_dir}"]) == 0
    assert [r["step"] for r in read_metrics(run_dir) if "loss/d" in r] == [1, 2, 3, 4, 5, 6]

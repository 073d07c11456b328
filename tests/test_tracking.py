"""Tracker: local JSONL records and real offline W&B runs, read back from the files wandb wrote.

No network is used: the runs are offline (or disabled), and the "auto" mode's reachability probe is
pointed at local sockets. Each real W&B run costs about a second, so the whole file makes four.
"""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import wandb
from helpers import raises_one_line
from PIL import Image
from wandb_records import read_offline_run

from stiefel_gan.config.schema import WANDB_MODES
from stiefel_gan.run import tracker as tracker_module
from stiefel_gan.run.records import read_metrics, read_series
from stiefel_gan.run.tracker import Tracker

CONFIG = {
    "model": {"lr": 2e-4, "betas": [0.0, 0.9], "spectrum": {"tau": 0.5, "eps": 0.1}},
    "seed": 3,
    "notes": "stiefel " * 9000,  # a long value (a record longer than one of the log's 32 KiB blocks)
}
SCALARS = [{"loss_d": 1.25, "loss_g": -0.5}, {"loss_d": 0.75, "loss_g": 0.125},
           {"loss_d": 0.5, "loss_g": 2.0}]
SPECTRUM_XS = [0.0, 0.5, 1.0]
SPECTRA = {"conv1": [1.0, 0.6, 0.1], "fc": [1.0, 0.3, 0.2]}


def _isolate_wandb(monkeypatch, home) -> None:
    """No credentials, no user settings, nothing written outside ``home``, quiet output."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE",
                 "WANDB_DIR", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # a file that does not exist
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))


@pytest.fixture(autouse=True)
def isolated_wandb(monkeypatch, tmp_path):
    _isolate_wandb(monkeypatch, tmp_path / "home")


def _tracker(run_dir, mode, **kwargs) -> Tracker:
    return Tracker(run_dir, CONFIG, project="stiefel-tests", entity=None, group="sn-vs-stiefel",
                   tags=["tau0.5", "digits"], name="stiefel-tau0.5", mode=mode, **kwargs)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One offline run: three steps of scalars, an image and a spectra line plot at step 2."""
    root = tmp_path_factory.mktemp("offline")
    run_dir = root / "run"
    image = torch.rand(3, 6, 5, generator=torch.Generator().manual_seed(0))
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate_wandb(monkeypatch, root / "home")
        with _tracker(run_dir, "offline") as tracker:
            for step, scalars in enumerate(SCALARS):
                tracker.log(step, scalars)
            tracker.log_images(2, {"samples": image})
            tracker.log_series(2, "spectra", SPECTRUM_XS, SPECTRA, title="normalized spectra")
    return tracker, run_dir, image


# ------------------------------------------------------------------------------------ offline run


def test_offline_run_round_trip(offline_run):
    tracker, run_dir, _ = offline_run
    assert tracker.mode == "offline"
    run = read_offline_run(run_dir)
    assert run.run_id == tracker.run_id
    assert (run.name, run.group, run.tags, run.project) == (
        "stiefel-tau0.5", "sn-vs-stiefel", ["tau0.5", "digits"], "stiefel-tests")
    assert run.config == CONFIG

    assert [row["_step"] for row in run.history] == [0, 1, 2]
    for row, scalars in zip(run.history, SCALARS):
        assert {key: row[key] for key in scalars} == scalars
    assert run.summary["loss_d"] == SCALARS[-1]["loss_d"] and run.summary["_step"] == 2

    # the local JSONL holds the same numbers, one row per log() call
    assert read_metrics(run_dir) == [{"step": step, **scalars} for step, scalars in enumerate(SCALARS)]


def test_offline_run_image_and_series(offline_run):
    _, run_dir, image = offline_run
    run = read_offline_run(run_dir)
    files_dir = next((run_dir / "wandb").glob("offline-run-*")) / "files"

    logged_image = run.history[2]["samples"]
    assert logged_image["_type"] == "image-file" and (logged_image["width"], logged_image["height"]) == (5, 6)
    pixels = np.asarray(Image.open(files_dir / logged_image["path"]))
    expected = np.rint(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)

    # line plots go to W&B once, at the end: one table of every step's (step, line, x, y) rows, and a
    # line_series chart of the last step, whose own table holds (x, line, y) rows
    (final,) = [row for row in run.history if "spectra/all_steps" in row]
    assert not any("spectra_table" in row for row in run.history if row is not final)
    table = json.loads((files_dir / final["spectra/all_steps"]["path"]).read_text())
    assert table["columns"] == ["step", "line", "x", "y"]
    assert table["data"] == [[2, name, x, y] for name, ys in SPECTRA.items() for x, y in zip(SPECTRUM_XS, ys)]
    chart = json.loads((files_dir / final["spectra_table"]["path"]).read_text())
    assert chart["data"] == [[x, name, y] for name, ys in SPECTRA.items() for x, y in zip(SPECTRUM_XS, ys)]

    assert read_series(run_dir) == [{"step": 2, "key": "spectra", "xs": SPECTRUM_XS, "series": SPECTRA}]


def test_quality_metrics_summarize_best_and_last_against_the_generator_step(tmp_path):
    goals = {"quality/fd": "minimize", "quality/coverage": "maximize"}
    with _tracker(tmp_path / "run", "offline", job_type="study", metric_goals=goals) as tracker:
        for step, (fd, coverage) in enumerate([(9.0, 3.0), (4.0, 8.0), (6.0, 5.0)], start=1):
            tracker.log(step, {"quality/fd": fd, "quality/coverage": coverage})
    run = read_offline_run(tmp_path / "run")
    assert run.job_type == "study"
    # every row carries the generator step, declared as the x-axis of every metric
    assert [row[tracker_module.STEP_METRIC] for row in run.history] == [1, 2, 3]
    assert run.metrics["quality/fd"]["summary"] == {"min": True, "last": True}
    assert run.metrics["quality/coverage"]["summary"] == {"max": True, "last": True}
    assert run.metrics["quality/coverage"]["step_metric"] == tracker_module.STEP_METRIC
    with pytest.raises(ValueError, match=r"metric_goals\['quality/fd'\]='lower' is not allowed"):
        _tracker(tmp_path / "bad", "disabled", metric_goals={"quality/fd": "lower"})


# ------------------------------------------------------------------------------------------ resume


def test_resume_truncates_jsonl_and_continues_the_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    first = _tracker(run_dir, "offline")
    for step in range(5):
        first.log(step, {"loss": float(step)})
        first.log_series(step, "spectra", SPECTRUM_XS, {"fc": [1.0, 0.5, float(step)]}, title="t")
    first.finish()  # as if it had crashed after step 4, with a checkpoint at step 2

    resumed = _tracker(run_dir, "offline", run_id=first.run_id, resume_step=2)
    assert resumed.run_id == first.run_id
    assert [row["step"] for row in read_metrics(run_dir)] == [0, 1, 2]
    assert [row["step"] for row in read_series(run_dir)] == [0, 1, 2]
    for step in range(3, 6):
        resumed.log(step, {"loss": 10.0 + step})
    resumed.finish()

    expected = [{"step": s, "loss": float(s)} for s in range(3)] + [
        {"step": s, "loss": 10.0 + s} for s in range(3, 6)]
    assert read_metrics(run_dir) == expected

    # wandb writes the continuation as a second offline run directory of the same run id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{first.run_id}*"))) == 2
    continued = read_offline_run(run_dir)  # the newest of the two
    assert continued.run_id == first.run_id
    assert [(row["_step"], row["loss"]) for row in continued.history] == [(s, 10.0 + s) for s in range(3, 6)]


def test_resume_steps_must_come_after_the_checkpoint(tmp_path):
    with _tracker(tmp_path, "disabled") as tracker:
        tracker.log(0, {"loss": 1.0})
        tracker.log(1, {"loss": 2.0})
    with _tracker(tmp_path, "disabled", resume_step=0) as tracker:
        with pytest.raises(ValueError, match="steps must be > 0"):
            tracker.log(0, {"loss": 3.0})
        tracker.log(1, {"loss": 4.0})
        tracker.log(3, {"loss": 5.0})
        with pytest.raises(ValueError, match="must not decrease"):
            tracker.log(2, {"loss": 6.0})
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 4.0},
                                      {"step": 3, "loss": 5.0}]


def test_torn_last_line_is_ignored_and_dropped_on_resume(tmp_path):
    with _tracker(tmp_path, "disabled") as tracker:
        tracker.log(0, {"loss": 1.0})
        tracker.log(1, {"loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "lo')  # killed mid-write
    assert [row["step"] for row in read_metrics(tmp_path)] == [0, 1]
    with _tracker(tmp_path, "disabled", resume_step=1) as tracker:
        tracker.log(2, {"loss": 3.0})
    assert read_metrics(tmp_path) == [{"step": s, "loss": s + 1.0} for s in range(3)]
    # a malformed *complete* line is corruption, not a torn write
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON line"):
        read_metrics(tmp_path)


def test_a_fresh_start_replaces_the_records_of_an_attempt_that_never_checkpointed(tmp_path):
    with _tracker(tmp_path, "disabled") as tracker:
        tracker.log(0, {"loss": 1.0})
    with _tracker(tmp_path, "disabled") as tracker:
        tracker.log(0, {"loss": 7.0})
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 7.0}]


# ------------------------------------------------------------------------------------------- modes


def test_disabled_writes_jsonl_and_touches_no_wandb(tmp_path):
    with _tracker(tmp_path, "disabled") as tracker:
        assert (tracker.mode, tracker.run_id) == ("disabled", None)
        tracker.log(0, {"loss": 1.0})
        tracker.log_images(0, {"samples": np.zeros((4, 4), dtype=np.uint8)})
        tracker.log_series(0, "spectra", SPECTRUM_XS, SPECTRA, title="t")
        assert wandb.run is None
    assert not (tmp_path / "wandb").exists()
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 1.0}]
    assert read_series(tmp_path)[0]["series"] == SPECTRA


def test_auto_without_credentials_goes_offline_with_one_sync_hint(tmp_path, capsys):
    capsys.readouterr()
    with _tracker(tmp_path / "run", "auto") as tracker:
        assert tracker.mode == "offline"
        tracker.log(0, {"loss": 1.0})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("W&B offline")]
    assert len(lines) == 1
    assert "no W&B credentials" in lines[0]
    sync_dir = lines[0].rsplit("wandb sync ", 1)[1]
    assert f"records in {sync_dir};" in lines[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))[0].as_posix() == sync_dir
    assert read_offline_run(sync_dir).history[0]["loss"] == 1.0


@pytest.mark.parametrize("env_mode, resolved", [("offline", "offline"), ("dryrun", "offline"),
                                                ("disabled", "disabled"), ("online", "online")])
def test_auto_respects_wandb_mode(monkeypatch, env_mode, resolved):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    assert tracker_module._resolve_mode("auto")[0] == resolved


def test_auto_goes_online_only_when_credentials_exist_and_the_host_answers(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # well formed; never sent anywhere
    with socket.create_server(("127.0.0.1", 0)) as listening:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listening.getsockname()[1]}")
        wandb.teardown()  # wandb reads its environment once per session
        assert tracker_module._resolve_mode("auto")[0] == "online"
        closed_port = listening.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port}")
    wandb.teardown()
    mode, reason = tracker_module._resolve_mode("auto")
    assert mode == "offline" and f"127.0.0.1:{closed_port} unreachable" in reason
    wandb.teardown()


def test_netrc_credentials_count(monkeypatch, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listening:
        host = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setenv("WANDB_BASE_URL", f"http://{host}")
        (tmp_path / "home" / "netrc").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "home" / "netrc").write_text(f"machine {host}\n  login user\n  password {'n' * 40}\n")
        wandb.teardown()
        assert tracker_module._resolve_mode("auto")[0] == "online"
    wandb.teardown()


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("mode", ["dryrun", "Online", "", None])
def test_bad_mode_raises_one_line(tmp_path, mode):
    raises_one_line(lambda: _tracker(tmp_path / "run", mode), repr(mode), *WANDB_MODES)
    assert not (tmp_path / "run").exists()  # nothing done before the check


@pytest.mark.parametrize("env_mode, mode", [("sometimes", "auto"), ("", "auto"), (" ", "offline")])
def test_bad_wandb_mode_environment_raises(monkeypatch, tmp_path, env_mode, mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    with pytest.raises(ValueError, match=f"WANDB_MODE='{env_mode.strip()}' is not allowed"):
        _tracker(tmp_path / "run", mode)
    assert not (tmp_path / "run").exists()


def test_nonfinite_values_are_valid_json_and_read_back(tmp_path):
    values = {"nan": math.nan, "inf": math.inf, "neg_inf": -math.inf, "tensor": torch.tensor(0.25),
              "numpy": np.float32(-1.5)}
    with _tracker(tmp_path, "disabled") as tracker:
        tracker.log(0, values)
        tracker.log_series(0, "spectra", [0.0, 1.0], {"fc": [math.inf, math.nan]}, title="t")

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    for name in ("metrics.jsonl", "series.jsonl"):
        for line in (tmp_path / name).read_text().splitlines():
            json.loads(line, parse_constant=reject)  # strict JSON: no NaN / Infinity tokens
    (row,) = read_metrics(tmp_path)
    assert math.isnan(row["nan"]) and row["inf"] == math.inf and row["neg_inf"] == -math.inf
    assert (row["tensor"], row["numpy"]) == (0.25, -1.5)
    (series,) = read_series(tmp_path)
    assert series["series"]["fc"][0] == math.inf and math.isnan(series["series"]["fc"][1])


@pytest.mark.parametrize("call, match", [
    (lambda t: t.log(-1, {"loss": 1.0}), "step=-1"),
    (lambda t: t.log(1.0, {"loss": 1.0}), "step=1.0"),
    (lambda t: t.log(0, {}), "non-empty dict"),
    (lambda t: t.log(0, {"step": 1.0}), "'step' is not allowed"),
    (lambda t: t.log(0, {"loss": "low"}), "real number"),
    (lambda t: t.log(0, {"loss": torch.ones(2)}), "real number"),
    (lambda t: t.log_images(0, {"samples": torch.rand(3, 4, 4) * 2 - 1}), "not \\[0.0, 1.0\\]"),
    (lambda t: t.log_images(0, {"samples": np.zeros((4, 4, 2))}), "shape \\(4, 4, 2\\)"),
    (lambda t: t.log_images(0, {"samples": "missing.png"}), "not an existing file"),
    (lambda t: t.log_series(0, "spectra", [0.0, 1.0], {"fc": [1.0]}, title="t"), "1 values"),
    (lambda t: t.log_series(0, "spectra", [], {"fc": []}, title="t"), "xs=\\[\\]"),
])
def test_bad_records_raise_one_line_and_write_nothing(tmp_path, call, match):
    with _tracker(tmp_path, "disabled") as tracker:
        raises_one_line(lambda: call(tracker), match=match)
    assert (tmp_path / "metrics.jsonl").read_text() == "" and (tmp_path / "series.jsonl").read_text() == ""


def test_finished_tracker_refuses_records(tmp_path):
    tracker = _tracker(tmp_path, "disabled")
    tracker.finish()
    tracker.finish()  # idempotent
    with pytest.raises(RuntimeError, match="finished"):
        tracker.log(0, {"loss": 1.0})


def test_uint8_and_path_images_are_accepted(tmp_path):
    png = tmp_path / "grid.png"
    Image.fromarray(np.full((4, 4, 3), 200, dtype=np.uint8)).save(png)
    with _tracker(tmp_path / "run", "disabled") as tracker:
        tracker.log_images(0, {"path": png, "uint8_chw": torch.full((1, 4, 4), 255, dtype=torch.uint8)})
    np.testing.assert_array_equal(
        tracker_module._image_as_uint8("x", torch.tensor([[[0.0, 0.5]], [[1.0, 0.25]], [[0.2, 0.8]]])),
        np.array([[[0, 255, 51], [128, 64, 204]]], dtype=np.uint8))


def test_checkpoint_is_logged_as_an_artifact_with_the_files_digest(tmp_path):
    import base64
    import hashlib

    from wandb_records import records

    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(bytes(range(256)) * 3)
    with _tracker(tmp_path / "run", "offline") as tracker:
        tracker.log(4, {"loss": 1.0})
        tracker.log_checkpoint(4, checkpoint)
        with pytest.raises(ValueError, match="is not an existing file"):
            tracker.log_checkpoint(4, tmp_path / "missing.pt")
    (artifact,) = [r["artifact"] for r in records(tmp_path / "run") if r["type"] == "artifact"]
    assert (artifact["name"], artifact["type"]) == (f"checkpoint-{tracker.run_id}", "checkpoint")
    assert set(artifact["aliases"]) == {"latest", "step-4"} and json.loads(artifact["metadata"]) == {"step": 4}
    (entry,) = artifact["manifest"]["contents"]
    expected = base64.b64encode(hashlib.md5(checkpoint.read_bytes()).digest()).decode()
    assert (entry["path"], entry["digest"], int(entry["size"])) == ("last.pt", expected, 768)

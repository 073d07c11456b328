"""Every run's records: local JSONL files and a Weights & Biases run.

A :class:`Tracker` writes each record twice:

- ``run_dir/metrics.jsonl``: one JSON object per :meth:`Tracker.log` call, ``{"step": step, **scalars}``;
- ``run_dir/series.jsonl``: one JSON object per :meth:`Tracker.log_series` call,
  ``{"step", "key", "xs", "series"}`` (the per-layer spectra: x = normalized singular-value index);
- a W&B run whose files live under ``run_dir/wandb`` (scalars, images, line plots).

Both JSONL files are flushed after every line, so a crash loses at most the line being written; a torn
last line (no trailing newline) is ignored by the readers. JSON has no non-finite numbers, so
``nan``, ``inf`` and ``-inf`` are written as the *strings* ``"nan"``, ``"inf"`` and ``"-inf"``
(lossless, unlike ``null``, which would merge a diverged ``inf`` loss with a ``nan`` one);
:func:`read_metrics` and :func:`read_series` turn them back into floats.

W&B modes (:data:`WANDB_MODES`): ``"online"``, ``"offline"`` (records only on disk, upload later with
``wandb sync``), ``"disabled"`` (no wandb call at all) and ``"auto"``, which resolves to

1. the ``WANDB_MODE`` environment variable when it is set (wandb's aliases ``dryrun`` = offline and
   ``run`` = online included);
2. else ``"online"`` when wandb finds credentials for its base URL (``WANDB_API_KEY``, the netrc file,
   or its settings files) *and* that host accepts a TCP connection within
   :data:`REACHABILITY_TIMEOUT_S` seconds (through the ``https_proxy`` / ``http_proxy`` when one is set);
3. else ``"offline"``.

Offline runs print one line naming the directory to upload with ``wandb sync``. wandb 0.31 writes an
offline run only as the binary transaction log ``run-<id>.wandb``; wandb itself reads it back:
``wandb leet inspect --json <run dir>/wandb/offline-run-*`` prints one JSON record per line (the tests
read runs back that way).

What W&B shows (Note [W&B panels]): every logged row carries ``train/step``, the generator step,
declared as the x-axis of every metric (``define_metric("*", step_metric="train/step")``); each
quality metric in :data:`METRIC_GOALS` keeps its best (``min`` or ``max``) and last value in the run
summary. Line plots (per-layer spectra) are kept in memory and sent once, when the run ends, as one
table per key holding every diagnostics step (columns ``step, line, x, y``) and a line plot of the
last step: ``wandb.plot.line_series`` at every diagnostics step would store a table artifact each
time, a thousand of them in a 100k-step run.

Resuming (``resume_step=k``): both JSONL files are first cut back to the rows with ``step <= k``
(rewritten atomically), so an interrupted and resumed run ends with the same rows as an uninterrupted
one, and the W&B run ``run_id`` is continued (``wandb.init(id=run_id, resume="allow")``). Offline,
wandb writes the continuation into a second directory, ``offline-run-*-<id>-1``, with the same run id
(sync both). Online, the server keeps the history rows the interrupted run logged after step ``k``,
and wandb drops re-logged steps that are not larger than the last one it has.
"""

from __future__ import annotations

import numbers
import os
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch
import wandb
from wandb.sdk import wandb_setup
from wandb.sdk.lib import wbauth

from ..config.checks import WANDB_ENV_MODES, check_wandb_environment
from ..config.paths import METRIC_STATUS_FILE, METRICS_FILE, SERIES_FILE
from ..config.schema import WANDB_MODES
from .records import encode_float, truncate_jsonl, write_line, write_status

#: Seconds a TCP connect to the W&B host may take before "auto" mode settles on offline.
REACHABILITY_TIMEOUT_S = 2.0

#: The x-axis of every W&B panel: the generator step, logged with every row.
STEP_METRIC = "train/step"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_step(step) -> None:
    if not _is_int(step) or step < 0:
        raise ValueError(f"step={step!r} is not allowed: use an integer >= 0")


def _as_float(what: str, value) -> float:
    """``float(value)`` for a Python/NumPy number or a one-element tensor, else a one-line ValueError."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{what}={value!r} is not allowed: use a real number")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{what}={value!r} is not allowed: use a real number "
                         "(a Python/NumPy scalar or a one-element tensor)") from None


def _check_name(what: str, name) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}={name!r} is not allowed: use a non-empty string")


def _image_as_uint8(name: str, image) -> np.ndarray:
    """An image array as ``uint8`` height x width (x channels), the layout ``wandb.Image`` stores.

    Accepted: NumPy ``(H, W)`` / ``(H, W, C)`` and torch ``(H, W)`` / ``(C, H, W)`` with ``C`` in
    1, 3, 4; integers in ``[0, 255]`` or floats in ``[0, 1]`` (torchvision's ``save_image``
    convention), mapped by ``round(255 x)``. ``wandb.Image`` would cast floats with ``astype(uint8)``,
    silently wrapping a ``[-1, 1]`` generator output, so the range is checked here instead.
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)  # torch images are channels-first
    else:
        array = np.asarray(image)
    allowed = ("use a path, or an array (H, W) / (H, W, C) (torch: (C, H, W)) with C in 1, 3, 4 "
               "of integers in [0, 255] or floats in [0, 1]")
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
    if not shape_ok or array.size == 0 or not (np.issubdtype(array.dtype, np.integer)
                                               or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"image {name!r} of shape {tuple(array.shape)} and dtype {array.dtype} "
                         f"is not allowed: {allowed}")
    low, high = (0.0, 1.0) if np.issubdtype(array.dtype, np.floating) else (0, 255)
    if not np.all(np.isfinite(array)) or array.min() < low or array.max() > high:
        raise ValueError(f"image {name!r} has values in [{array.min()}, {array.max()}], not "
                         f"[{low}, {high}]: {allowed}")
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array * 255.0)
    return array.astype(np.uint8)


def _connect_target(base_url: str) -> tuple[str, int]:
    """``(host, port)`` a TCP connection to ``base_url`` goes to first: the proxy if one applies."""
    parts = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname, parts.port or default_port


def _resolve_mode(mode: str) -> tuple[str, str]:
    """``(resolved_mode, reason)`` for a checked ``mode``; the reason is shown when offline."""
    check_wandb_environment(mode)
    if mode != "auto":
        return mode, f"mode={mode!r}"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode:
        if env_mode not in WANDB_ENV_MODES:
            raise ValueError(f"WANDB_MODE={env_mode!r} is not allowed with mode='auto': use one of "
                             f"{', '.join(WANDB_ENV_MODES)}")
        return WANDB_ENV_MODES[env_mode], f"WANDB_MODE={env_mode}"
    base_url = wandb_setup.singleton().settings.base_url
    try:
        # wandb's own lookup (environment, netrc, settings files); prompt/update_session off so that
        # nothing is asked and no session state changes
        credentials = wbauth.authenticate_session(
            host=wbauth.HostUrl(base_url), source="stiefel_gan.run.tracker", prompt=False,
            update_session=False)
    except wandb.errors.AuthenticationError as error:
        return "offline", f"unusable W&B credentials: {error}"
    if credentials is None:
        return "offline", f"no W&B credentials for {base_url}"
    host, port = _connect_target(base_url)
    try:
        socket.create_connection((host, port), timeout=REACHABILITY_TIMEOUT_S).close()
    except OSError as error:
        return "offline", f"{host}:{port} unreachable: {error}"
    return "online", "credentials found and host reachable"


def require_online(what: str) -> None:
    """Raise a one-line ValueError naming ``what`` unless W&B can be reached with credentials
    (the ``auto`` mode's test: ``WANDB_MODE``, then credentials and a TCP connection)."""
    mode, reason = _resolve_mode("auto")
    if mode != "online":
        raise ValueError(f"{what} needs the W&B server, which is not usable here ({reason})")


class Tracker:
    """Local JSONL records plus a W&B run, for one training run.

    Parameters
    ----------
    run_dir : Path
        Directory of the run (created if missing); receives ``metrics.jsonl``, ``series.jsonl`` and
        wandb's ``wandb/`` folder.
    config : dict
        The run's configuration (nested dicts allowed), stored as the W&B config.
    project, entity, group, job_type, tags, name
        W&B run attributes.
    mode : str
        One of :data:`WANDB_MODES`; see the module docstring for how ``"auto"`` resolves.
    run_id : str or None
        W&B run id to continue (with ``resume="allow"``); ``None`` lets wandb make a new one.
    resume_step : int or None
        Resume after this step: JSONL rows with a larger step are dropped first. ``None`` starts the
        JSONL files afresh (rows of an earlier attempt that never checkpointed are discarded).
    metric_goals : dict or None
        ``{metric: "minimize" | "maximize"}``: W&B's summary keeps the best and the last value.

    Attributes
    ----------
    run_id : str or None
        The W&B run id (``None`` when disabled), to be stored in checkpoints.
    mode : str
        The resolved mode: ``"online"``, ``"offline"`` or ``"disabled"``.

    Steps must not decrease from one call to the next (W&B drops rows that go back), and after a
    resume they must exceed ``resume_step``, whose rows are already on record.
    """

    def __init__(self, run_dir: Path, config: dict, *, project: str, entity: str | None,
                 group: str | None, tags: list[str], name: str, job_type: str | None = None,
                 mode: str = "auto", run_id: str | None = None, resume_step: int | None = None,
                 metric_goals: Mapping[str, str] | None = None):
        if mode not in WANDB_MODES:
            raise ValueError(f"mode={mode!r} is not allowed: use one of {', '.join(WANDB_MODES)}")
        if not isinstance(config, Mapping):
            raise ValueError(f"config of type {type(config).__name__} is not allowed: use a dict")
        _check_name("project", project)
        _check_name("name", name)
        for what, value in (("entity", entity), ("group", group), ("job_type", job_type), ("run_id", run_id)):
            if value is not None:
                _check_name(what, value)
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
            raise ValueError(f"tags={tags!r} is not allowed: use a list of non-empty strings")
        if resume_step is not None:
            _check_step(resume_step)
        metric_goals = dict(metric_goals or {})
        for key, goal in metric_goals.items():
            if goal not in ("minimize", "maximize"):
                raise ValueError(f"metric_goals[{key!r}]={goal!r} is not allowed: use minimize or maximize")

        self.mode, reason = _resolve_mode(mode)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

        metrics_path, series_path = self.run_dir / METRICS_FILE, self.run_dir / SERIES_FILE
        self._metric_status_path = self.run_dir / METRIC_STATUS_FILE  # written on the first status only
        if resume_step is None:
            self._last_step = -1
            file_mode = "w"
            self._metric_status_path.unlink(missing_ok=True)
        else:
            self._last_step = resume_step
            for path in (metrics_path, series_path, self._metric_status_path):
                truncate_jsonl(path, resume_step)
            file_mode = "a"
        self._resume_step = resume_step
        self._metrics = open(metrics_path, file_mode, encoding="utf-8")
        self._series = open(series_path, file_mode, encoding="utf-8")

        self._run = None
        self.run_id = None
        self._lines: dict[str, list[tuple[int, str, float, float]]] = {}  # key -> (step, line, x, y) rows
        self._last_lines: dict[str, tuple[str, list[float], dict[str, list[float]]]] = {}
        if self.mode != "disabled":
            try:
                self._run = wandb.init(
                    dir=str(self.run_dir), project=project, entity=entity, group=group,
                    job_type=job_type, tags=list(tags), name=name, config=dict(config), mode=self.mode, id=run_id,
                    resume="allow" if run_id is not None else None,
                    # wandb's own banner and run summary would print ~40 lines per run; the one-line
                    # offline hint below says what a user needs
                    settings=wandb.Settings(silent=True))
            except BaseException:
                self._metrics.close()
                self._series.close()
                raise
            self.run_id = self._run.id
            self._run.define_metric(STEP_METRIC)
            self._run.define_metric("*", step_metric=STEP_METRIC)
            for key, goal in metric_goals.items():
                self._run.define_metric(key, step_metric=STEP_METRIC,
                                        summary=f"{'min' if goal == 'minimize' else 'max'},last")
            if self.mode == "offline":
                sync_dir = self._run.settings.sync_dir
                print(f"W&B offline ({reason}): records in {sync_dir}; "
                      f"upload later with: wandb sync {sync_dir}", file=sys.stderr)
            else:  # wandb itself is silenced: say where the run is
                print(f"W&B run: {self._run.url}", file=sys.stderr)

    # -- records

    def _check_open_and_step(self, step) -> None:
        if self._metrics.closed:
            raise RuntimeError("this Tracker is finished; make a new one to record more")
        _check_step(step)
        if self._resume_step is not None and step <= self._resume_step:
            raise ValueError(f"step={step} is not allowed: the run resumed after step "
                             f"{self._resume_step}, so steps must be > {self._resume_step}")
        if step < self._last_step:
            raise ValueError(f"step={step} is not allowed: steps must not decrease "
                             f"(last logged step {self._last_step})")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Append ``{"step": step, **scalars}`` to ``metrics.jsonl``; log ``scalars`` to W&B at ``step``."""
        self._check_open_and_step(step)
        if not isinstance(scalars, Mapping) or not scalars:
            raise ValueError(f"scalars={scalars!r} is not allowed: use a non-empty dict name -> number")
        values = {}
        for key, value in scalars.items():
            _check_name("scalar name", key)
            if key == "step":
                raise ValueError("scalar name 'step' is not allowed: it is the row's own step column")
            values[key] = _as_float(f"scalars[{key!r}]", value)

        write_line(self._metrics, {"step": int(step), **{k: encode_float(v) for k, v in values.items()}})
        if self._run is not None:
            self._run.log({STEP_METRIC: int(step), **values}, step=int(step))
        self._last_step = int(step)

    def log_statuses(self, step: int, statuses: dict[str, str]) -> None:
        """Why metrics logged at ``step`` are NaN: ``{"quality/<metric>_status": reason}``, appended to
        ``metric_status.jsonl`` and set in the W&B summary (a status is text: no history chart holds it)."""
        self._check_open_and_step(step)
        if not isinstance(statuses, Mapping) or not statuses:
            raise ValueError(f"statuses={statuses!r} is not allowed: use a non-empty dict name -> reason")
        for key, reason in statuses.items():
            _check_name("status name", key)
            _check_name(f"statuses[{key!r}]", reason)
        with open(self._metric_status_path, "a", encoding="utf-8") as handle:
            write_line(handle, {"step": int(step), **statuses})
        if self._run is not None:
            self._run.summary.update(dict(statuses))
        self._last_step = int(step)

    def log_images(self, step: int, images: dict[str, Path | np.ndarray | torch.Tensor]) -> None:
        """Log images to W&B at ``step`` as ``wandb.Image`` keyed by name (nothing is written locally).

        A value is the path of an image file, or an array: NumPy ``(H, W)`` / ``(H, W, C)`` or torch
        ``(H, W)`` / ``(C, H, W)`` with ``C`` in 1, 3, 4, holding integers in ``[0, 255]`` or floats
        in ``[0, 1]`` (map a ``tanh`` generator's ``[-1, 1]`` output with ``(x + 1) / 2`` first).
        """
        self._check_open_and_step(step)
        if not isinstance(images, Mapping) or not images:
            raise ValueError(f"images={images!r} is not allowed: use a non-empty dict name -> image")
        checked = {}
        for key, image in images.items():
            _check_name("image name", key)
            if isinstance(image, (str, os.PathLike)):
                if not Path(image).is_file():
                    raise ValueError(f"image {key!r}: {str(image)!r} is not an existing file")
                checked[key] = str(image)
            else:
                checked[key] = _image_as_uint8(key, image)
        if self._run is not None:
            self._run.log({STEP_METRIC: int(step), **{key: wandb.Image(image) for key, image in checked.items()}},
                          step=int(step))
        self._last_step = int(step)

    def log_series(self, step: int, key: str, xs: Sequence[float],
                   series: dict[str, Sequence[float]], title: str) -> None:
        """One line plot with a line ``series[name]`` against ``xs`` per name, logged under ``key``.

        ``series.jsonl`` gets ``{"step", "key", "xs", "series"}`` at once; W&B gets every step's lines
        when the run ends (Note [W&B panels]). For spectra: ``xs`` is the normalized singular-value
        index ``i / (k - 1)`` and there is one line per layer.
        """
        self._check_open_and_step(step)
        _check_name("series key", key)
        if not isinstance(title, str):
            raise ValueError(f"title={title!r} is not allowed: use a string")
        x_values = [_as_float(f"xs[{i}]", x) for i, x in enumerate(xs)]
        if not x_values:
            raise ValueError("xs=[] is not allowed: use at least one x value")
        if not isinstance(series, Mapping) or not series:
            raise ValueError(f"series={series!r} is not allowed: use a non-empty dict name -> values")
        lines = {}
        for name, ys in series.items():
            _check_name("series name", name)
            lines[name] = [_as_float(f"series[{name!r}][{i}]", y) for i, y in enumerate(ys)]
            if len(lines[name]) != len(x_values):
                raise ValueError(f"series[{name!r}] has {len(lines[name])} values, not "
                                 f"len(xs)={len(x_values)}: give one value per x")

        write_line(self._series, {
            "step": int(step), "key": key, "xs": [encode_float(x) for x in x_values],
            "series": {name: [encode_float(y) for y in ys] for name, ys in lines.items()},
        })
        if self._run is not None:
            rows = self._lines.setdefault(key, [])
            rows.extend((int(step), name, x, y) for name, ys in lines.items() for x, y in zip(x_values, ys))
            self._last_lines[key] = (title, x_values, lines)
        self._last_step = int(step)

    def log_checkpoint(self, step: int, path: Path) -> None:
        """Upload the checkpoint file as a W&B artifact ``checkpoint-<run id>`` (type ``checkpoint``,
        aliases ``latest`` and ``step-<step>``); nothing when W&B is disabled."""
        self._check_open_and_step(step)
        if not Path(path).is_file():
            raise ValueError(f"checkpoint {str(path)!r} is not an existing file")
        if self._run is None:
            return
        artifact = wandb.Artifact(f"checkpoint-{self.run_id}", type="checkpoint", metadata={"step": int(step)})
        artifact.add_file(str(path))
        self._run.log_artifact(artifact, aliases=["latest", f"step-{int(step)}"])

    def set_status(self, status: str, reason: str, step: int) -> None:
        """Record how the run stands: ``status.json`` (:func:`~.records.write_status`) and the W&B summary's
        ``status``, ``status_reason`` and ``status_step``, so that a study's failed runs can be found in
        W&B (filter on ``status``) as on disk. W&B's own run state says only crashed or finished."""
        record = write_status(self.run_dir, status, reason, step)
        if self._run is not None:
            self._run.summary.update({"status": record["status"], "status_reason": record["reason"],
                                      "status_step": record["step"]})

    def _send_lines(self) -> None:
        """Every line plot's rows as one table per key, and a line plot of its last step."""
        for key, rows in self._lines.items():
            title, x_values, lines = self._last_lines[key]
            table = wandb.Table(columns=["step", "line", "x", "y"], data=[list(row) for row in rows])
            chart = wandb.plot.line_series(xs=x_values, ys=list(lines.values()), keys=list(lines),
                                           title=title, xname="x")
            self._run.log({f"{key}/all_steps": table, key: chart}, commit=False)

    # -- end

    def _close(self, exit_code: int) -> None:
        if self._metrics.closed:
            return
        self._metrics.close()
        self._series.close()
        if self._run is not None:
            try:
                self._send_lines()
                self._run.finish(exit_code=exit_code)
            finally:
                # run.finish() only *informs* wandb's service process, which writes out and closes
                # the transaction log later (a run-<id>.wandb read right after finish() has been seen
                # holding just its 7-byte header); teardown waits for that process to exit.
                wandb.teardown()

    def finish(self) -> None:
        """Close the JSONL files and finish the W&B run; later calls do nothing.

        When it returns, the run's files under ``run_dir/wandb`` are complete. It ends the process's
        wandb session (``wandb.teardown()``), so other wandb runs still open in this process are
        finished too; the next ``Tracker`` starts a new session.
        """
        self._close(exit_code=0)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # a run left by an exception is marked failed in W&B
        self._close(exit_code=0 if exc_type is None else 1)

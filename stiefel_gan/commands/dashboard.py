"""A study's W&B workspace, built as code with wandb-workspaces.

``stiefel-gan dashboard --entity E --project P --study S`` saves a workspace view of the study's runs
(``job_type == S``), grouped by W&B group (one group per variant, seeds inside: see
:func:`stiefel_gan.config.naming.wandb_group`), so every line panel shows each variant's mean and spread
next to the SN baseline's, which is drawn in black and thicker. Sections:

- Quality: every ``quality/*`` metric against the generator step;
- Spectra: each layer's largest reshaped singular value and operator norm; the normalized spectra of
  the last diagnostics step (a line-series chart per run);
- Lipschitz: the upper bound (product of layer norms) and the empirical lower bound;
- Gradients: gradient norms of D's loss per layer and factor (``W``, ``X``, ``lambda``);
- Manifold: drift of the Stiefel factors, learned spectrum parameters;
- Samples: the sample grids.

What wandb-workspaces cannot express (also in docs/studies-engines.md): a custom chart (the
normalized spectra) shows one run's table at a time, not a mean per group, so spectra are compared
per run; and a workspace cannot pick "the SN variant" by a rule, so the SN groups are named
explicitly, from the study's variants whose ``disc.kind`` is ``sn``.

``--dry-run FILE`` writes the workspace's JSON spec (the view wandb-workspaces would upload) without
any network: that is what the tests check.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..config.compose import UsageError, config_files, job_config, one_line
from ..config.naming import label

#: how an SN baseline group is drawn, so the comparison users come for stands out
BASELINE_COLOR = "#000000"

BASELINE_WIDTH = 3.0


def _libraries():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    return wr, ws


def study_groups(study: str) -> tuple[list[str], list[str], str]:
    """``(groups, baseline_groups, headline)``: the W&B groups of the study's variants, those of its SN
    variants (from ``configs/experiment/<study>.yaml``'s ``hydra.sweeper.params``) and the headline
    quality metric of its dataset."""
    from omegaconf import OmegaConf

    from ..config.naming import wandb_group
    from ..measure.table import OBJECTIVES

    path = config_files() / "experiment" / f"{study}.yaml"
    if not path.is_file():
        studies = sorted(p.name[:-5] for p in (config_files() / "experiment").iterdir() if p.name.endswith(".yaml"))
        raise UsageError(f"--study {study!r} is not allowed: use one of {', '.join(studies)} (configs/experiment/)")
    params = OmegaConf.create(path.read_text()).get("hydra", {}).get("sweeper", {}).get("params", {}) or {}
    variants = [v.strip() for v in str(params.get("variant", "")).split(",") if v.strip()]
    if not variants:
        raise UsageError(f"--study {study!r} is not allowed: configs/experiment/{study}.yaml has no "
                         "hydra.sweeper.params.variant axis")
    groups, baselines, headlines = [], [], set()
    for variant in variants:
        try:
            cfg = job_config([f"experiment={study}", f"variant={variant}"])
        except ValueError as error:
            raise UsageError(f"study {study!r}, variant {variant!r}: {one_line(error)}") from None
        groups.append(wandb_group(cfg))
        headlines.add(OBJECTIVES[cfg.data.name][0])
        if label(cfg.disc.kind) == "sn":
            baselines.append(wandb_group(cfg))
    return groups, baselines, sorted(headlines)[0]


def build_workspace(entity: str, project: str, study: str):
    """The :class:`wandb_workspaces.workspaces.Workspace` of a study (nothing is sent)."""
    from ..run.tracker import STEP_METRIC

    wr, ws = _libraries()
    groups, baselines, headline = study_groups(study)
    step = STEP_METRIC

    def lines(title: str, regex: str, **options) -> "wr.LinePlot":
        # one line per W&B group: its mean over seeds, with the min-max band; SN black and thick
        return wr.LinePlot(title=title, x=step, metric_regex=regex, groupby_aggfunc="mean",
                           groupby_rangefunc="minmax", **options)

    # the line_series chart each run logs when it ends (tracking.Tracker._send_lines), one run at a time
    spectra_chart = wr.CustomChart.from_table(
        "spectrum/normalized_table", chart_fields={"step": "x", "lineKey": "lineKey", "lineVal": "lineVal"},
        chart_strings={"title": "Normalized spectra per layer (last diagnostics step)"})
    spectra_chart.chart_name = "wandb/lineseries/v0"
    sections = [
        ws.Section(name="Quality vs SN", is_open=True, panels=[
            lines("Quality metrics per variant", r"^quality/.*"),
            wr.ScalarChart(title=f"{headline} (last) per variant", metric=wr.SummaryMetric(headline),
                           groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]),
        ws.Section(name="Spectra", is_open=True, panels=[
            lines("Largest reshaped singular value per layer", r"^sigma_max/.*"),
            lines("Operator norm per conv layer (real input size)", r"^operator_norm/.*"),
            spectra_chart,
        ]),
        ws.Section(name="Lipschitz bounds", panels=[
            lines("Upper bound (product of layer norms) and empirical lower bound", r"^lipschitz/(upper|lower)_bound$"),
        ]),
        ws.Section(name="Gradients per layer and factor", panels=[
            lines("Gradient norms of D's loss per layer and factor", r"^grad_norm/.*"),
            lines("Saturation of D", r"^saturation/.*"),
        ]),
        ws.Section(name="Manifold", panels=[
            lines("Drift of the Stiefel factors from the manifold", r"^drift/.*"),
            lines("Learned spectrum parameters", r"^(tau|eps|sigma)/.*"),
        ]),
        ws.Section(name="Samples", panels=[wr.MediaBrowser(title="Samples", media_keys=["samples"], num_columns=4)]),
    ]
    runsets = ws.RunsetSettings(
        filters=ws.And(ws.Metric("JobType") == study),  # a plain list of filters is deprecated
        groupby=[ws.Metric("Group")],
        group_colors={group: BASELINE_COLOR for group in baselines},
    )
    return ws.Workspace(entity=entity, project=project, name=f"{study}: variants vs SN",
                        sections=sections, runset_settings=runsets,
                        settings=ws.WorkspaceSettings(x_axis=step)), groups, baselines


def workspace_spec(entity: str, project: str, study: str) -> dict:
    """The JSON spec of the view, as wandb-workspaces would upload it, with the study's groups."""
    workspace, groups, baselines = build_workspace(entity, project, study)
    view = workspace._to_model()  # the upload payload (Workspace.save sends exactly this model)
    return {"study": study, "groups": groups, "baseline_groups": baselines,
            "view": json.loads(view.model_dump_json(by_alias=True, exclude_none=True))}


def write_spec(entity: str, project: str, study: str, path: Path) -> Path:
    """``--dry-run``: the spec as a JSON file; no network."""
    path = Path(path)
    spec = workspace_spec(entity, project, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1, sort_keys=True))
    return path


def save_workspace(entity: str, project: str, study: str) -> str:
    """Save the view to W&B; returns its URL. Refused in one line when W&B is not reachable."""
    from ..run.tracker import require_online

    workspace, _, _ = build_workspace(entity, project, study)  # bad input first, then the network
    try:
        require_online("stiefel-gan dashboard (use --dry-run FILE to write the spec without network)")
    except ValueError as error:
        raise UsageError(one_line(error)) from None
    return workspace.save().url

"""The names a config gives its run: the run directory's name, the keys that make a variant, the W&B
group and tags.

One owner, so that the directory Hydra creates (``configs/config.yaml`` calls :func:`run_name_for`
through a resolver), the checked sweeper, the runner, the dashboard and the report agree:

- :func:`run_name_for` / :func:`default_run_name`: ``<variant>-s<seed>``, else ``<disc>-<optim>-s<seed>``;
- :data:`NOT_VARIANT_KEYS`: the keys that never make two runs different variants (the seed, names,
  bookkeeping, what may change on resume); the report groups runs and :func:`wandb_group` digests
  configs with it;
- :func:`wandb_group`: ``<experiment>/<variant>``, the seeds of a variant in one W&B group;
- :func:`run_tags`: W&B tags, ``baseline`` on the SN runs.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from .schema import Config, config_dict, flatten


def label(value) -> str:
    """A config choice as text: an Enum's value (``sn``, not ``DiscKind.sn``), anything else ``str``."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def run_name_for(run_name: str | None, variant: str | None, disc, optim, seed: int) -> str:
    """A run's directory name: ``run_name``, else ``<variant>-s<seed>`` for a study variant, else
    ``<disc label>-<optim>-s<seed>`` (``disc`` is the ``disc`` config node, see :func:`disc_label`)."""
    if run_name:
        return str(run_name)
    return f"{variant_label(variant, disc, optim)}-s{seed}"


def variant_label(variant: str | None, disc, optim) -> str:
    """The study ``variant``, else ``<disc label>-<optim>``: the part of a run's name and W&B group
    that says what it trains."""
    return variant or f"{disc_label(disc)}-{label(optim)}"


def disc_label(disc) -> str:
    """A short name of D's parameterization: the kind, and for ``stiefel`` its spectrum, factorization and
    normalization (``stiefel_grid``, ``stiefel_fixed_svd``, ``stiefel_fixed_frobenius``).
    ``disc`` is a :class:`DiscConfig` or anything with its attributes (a run's saved config as a DictConfig)."""
    if disc.kind != "stiefel":
        return str(disc.kind)
    parts = [f"stiefel_{disc.spectrum}"]
    parts += [str(disc.factorization)] if disc.factorization != "diag" else []
    parts += [str(disc.normalize)] if disc.normalize != "none" else []
    return "_".join(parts)


#: what a study's report tests (``report.*``): it changes no run, so it makes no variant and may change on
#: resume (a checkpoint written before the section existed has none)
REPORT_KEYS = ("report.comparisons", "report.contrasts", "report.statistic", "report.alpha", "report.regress_on")
#: the tuning protocol (``tuning.*``): how a study reads its runs, like ``report.*``; it makes no variant
TUNING_KEYS = ("tuning.statistic", "tuning.selection_seeds", "tuning.confirm_seeds")


#: keys that may differ between a checkpoint's config and the config that resumes it
RESUMABLE_KEYS = ("resume", "train.steps", "train.progress", "train.device", "train.threads", "wandb.mode",
                  "wandb.tags", *REPORT_KEYS, *TUNING_KEYS)


def default_run_name(cfg: Config) -> str:
    """``run_name``, else ``<variant>-s<seed>`` for a study variant, else ``<disc label>-<optim>-s<seed>``."""
    return run_name_for(cfg.run_name, cfg.variant, cfg.disc, cfg.optim.name, cfg.train.seed)


def run_tags(cfg: Config) -> list[str]:
    """W&B tags: D's kind and label, the optimizer, loss, dataset, the config's own tags; ``baseline``
    for the SN baseline (the variant whose ``disc.kind`` is ``sn``)."""
    tags = {label(cfg.disc.kind), disc_label(cfg.disc), label(cfg.optim.name), label(cfg.loss.name),
            label(cfg.data.name), *cfg.wandb.tags}
    return sorted(tags | ({"baseline"} if cfg.disc.kind == "sn" else set()))


#: keys that do not make a different variant: the seed, names, where and how a run is recorded, what its
#: report tests. The one list the report groups runs by and the W&B group digest is taken without (which
#: also leaves out :data:`RESUMABLE_KEYS`, so that a run resumed with a larger ``train.steps`` stays in its
#: group).
NOT_VARIANT_KEYS = ("train.seed", "name", "run_name", "out_dir", "resume", "train.progress", "train.device",
                    "train.threads", "wandb.mode", "wandb.tags", "wandb.group", "wandb.log_checkpoints", *REPORT_KEYS, *TUNING_KEYS)


def wandb_group(cfg: Config) -> str:
    """``wandb.group``, else ``<experiment>/<variant>``: all seeds of a variant in one W&B group.

    Without a study ``variant`` the label is ``<disc label>-<optim>-<digest>``, where the digest is taken
    over every key that differs from the schema's default, except :data:`NOT_VARIANT_KEYS` and
    :data:`RESUMABLE_KEYS`, so that two runs that differ in anything but the seed (a swept ``disc.tau``,
    say) never share a group and never get averaged together, and a key added to the schema later
    (at its default) leaves every group as it was.
    """
    if cfg.wandb.group:
        return cfg.wandb.group
    if cfg.variant:
        return f"{cfg.name}/{cfg.variant}"
    ignored = {*NOT_VARIANT_KEYS, *RESUMABLE_KEYS}
    defaults = flatten(config_dict(Config()))
    flat = {k: v for k, v in flatten(config_dict(cfg)).items()
            if k not in ignored and (k not in defaults or v != defaults[k])}
    digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=label).encode()).hexdigest()[:8]
    return f"{cfg.name}/{variant_label(None, cfg.disc, cfg.optim.name)}-{digest}"


def swept_wandb_group(cfg: Config, swept_values: str) -> str:
    """The W&B group of a sweep's job whose swept keys do not appear in its name (Note [Names within a
    sweep]): ``<experiment>/<variant label>_<swept values>``."""
    return f"{cfg.name}/{variant_label(cfg.variant, cfg.disc, cfg.optim.name)}_{swept_values}"


#: the config keys that already appear in a run's default name (rundir.run_name_for)
NAMED_KEYS = ("variant", "disc", "disc.kind", "optim", "optim.name", "train.seed", "experiment", "run_name")

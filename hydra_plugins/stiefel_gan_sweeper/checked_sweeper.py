"""The default sweeper of ``stiefel-gan train -m`` (``configs/hydra/sweeper/checked.yaml``).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package, hence this module;
the checks themselves live in :mod:`stiefel_gan.config.checks`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from stiefel_gan.config.checks import check_job, check_launcher, check_study
from stiefel_gan.config.compose import UsageError, job_config, one_line
from stiefel_gan.config.naming import NAMED_KEYS, run_name_for, swept_wandb_group


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper (``a=1,2`` axes, ``hydra.sweeper.params``) that composes and checks every
    job, and the jobs together (the variants ``report.comparisons`` names), before launching the first,
    and gives jobs that share a default run name distinct ones.

    Note [Names within a sweep]: a run's default name says its variant (or disc and optimizer) and
    seed. A sweep over anything else (``disc.tau=0.5,1``, ``data=ring8,grid25``) would give two jobs
    one name, one directory and one W&B group; such jobs get ``run_name`` and ``wandb.group``
    overrides that append the other swept values.
    """

    def sweep(self, arguments: list[str]) -> Any:
        try:
            check_launcher(self.config.hydra.launcher)
            jobs = self._expanded_jobs(arguments)
            here = not str(self.config.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher")
            configs = [job_config(overrides) for overrides in jobs]
            for cfg in configs:
                check_job(cfg, here=here)
            check_study(configs, study_presets=self._study_presets())
        except UsageError as error:
            print(f"stiefel-gan: error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        return self._launch(jobs)

    def _study_presets(self) -> list[str]:
        """The variant presets of the study's own axis (``hydra.sweeper.params.variant`` of the experiment),
        whichever of them this sweep runs."""
        params = self.config.hydra.sweeper.get("params") or {}
        return [name.strip() for name in str(params.get("variant", "")).split(",") if name.strip()]

    def _expanded_jobs(self, arguments: list[str]) -> list[list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            parsed = parser.parse_overrides([*self._parse_config(), *arguments])
        except HydraException as error:
            raise UsageError(one_line(error)) from None
        swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        try:
            jobs = [list(job) for batch in self.split_arguments(parsed, None) for job in batch]
        except HydraException as error:  # a sweep type the basic sweeper cannot expand
            raise UsageError(one_line(error)) from None
        extra_keys = [key for key in swept if key.lstrip("+~") not in NAMED_KEYS]
        if not extra_keys:
            return jobs
        named = []
        for job in jobs:
            cfg = job_config(job)
            values = dict(o.split("=", 1) for o in job if "=" in o)
            tail = "_".join((values[k] if "." not in k else f"{k}={values[k]}").replace("/", "-") for k in extra_keys)
            base = run_name_for(cfg.run_name, cfg.variant, cfg.disc, cfg.optim.name, cfg.train.seed)
            group = swept_wandb_group(cfg, tail)
            extra = [f"run_name='{base}_{tail}'"] if cfg.run_name is None else []
            extra += [f"wandb.group='{group}'"] if cfg.wandb.group is None else []
            named.append(job + extra)
        return named

    def _launch(self, jobs: list[list[str]]) -> Any:
        """BasicSweeper.sweep's launch loop, over the jobs already expanded and checked."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        batch_size = self.max_batch_size or len(jobs)
        returns = []
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for result in results:
                _ = result.return_value  # re-raises a job's exception
            returns.append(results)
        return returns

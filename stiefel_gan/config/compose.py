"""Composing configs: ``configs/config.yaml`` and Hydra overrides -> a typed :class:`~.schema.Config`.

This is the composition every caller uses: the Hydra app, ``compare``, the checked sweeper, the W&B
sweeps, the tests and the benchmarks. Configs load from the package ``stiefel_gan.configs`` (the
repository's top-level ``configs/``, mapped into the package by ``pyproject.toml``) through Hydra's
``pkg://`` search path, in editable and non-editable installs alike; a source checkout on
``PYTHONPATH`` without an install reads its own ``configs/`` directory (:func:`config_source`).

A bad override is a :class:`UsageError`: one line (:func:`one_line`), exit status 2 at the command line.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import typing
from enum import Enum
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import EnumNode, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from .naming import run_name_for
from .paths import HYDRA_DIR, RunDir
from .schema import Config, register_configs

#: the package of the checked sweeper (``hydra/sweeper=checked``, the default)
SWEEPER_PACKAGE = "hydra_plugins.stiefel_gan_sweeper"

CONFIG_PACKAGE = "stiefel_gan.configs"

#: the repository's configs/ next to the package, for a source checkout that is not installed
SOURCE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class UsageError(ValueError):
    """A bad command line or config: reported as one line, exit status 2."""


class JobFailed(RuntimeError):
    """A job of a study that did not finish (Note [A study survives one bad run] in
    :mod:`stiefel_gan.commands.train`): raised by the Hydra task so that the launcher records the job as
    failed and goes on with the next; the checked sweeper names it at the end. ``job`` is its run
    directory, ``status`` one of ``failed``, ``diverged``, ``interrupted`` (the endings of
    :data:`~.paths.RUN_STATUSES`) or ``not started``."""

    def __init__(self, job: str, status: str, reason: str):
        super().__init__(job, status, reason)  # the arguments again: it is pickled back from a worker
        self.job, self.status, self.reason = job, status, reason

    def __str__(self) -> str:
        return f"{self.job}: {self.status}: {self.reason}"


def one_line(error: BaseException) -> str:
    """Hydra and OmegaConf spread some messages over several lines (a list of available options, the
    config search path): keep what names the problem, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # the search-path dump Hydra appends to "could not find" errors says nothing a user can act on
    lines = [line for line in lines if not line.startswith(("Config search path", "provider=", "Config, search"))]
    text = " ".join(lines).replace("\t", " ")
    if "Available options" in text:
        head, _, options = text.partition("Available options")
        scope, _, names = options.partition(":")
        text = f"{head.strip()}; available options{scope}: {', '.join(names.split())}"
    # Hydra's "Error merging override x=y" keeps its reason in the chained OmegaConf error
    cause = error.__cause__
    if cause is not None:
        reason = one_line(cause).partition("full_key:")[0].strip().rstrip(".")
        if reason and reason not in text:
            text = f"{text}: {reason}"
    return text


def refused_choice(error: BaseException) -> str | None:
    """OmegaConf's refusal of a value outside a typed choice (a :class:`~.schema.Choice` field, or an
    element of a list of them), in the words of every other check: ``loss.name='wgan' is not allowed:
    use one of hinge, vanilla``; None for any other error. ``error`` is OmegaConf's, or Hydra's around it.

    OmegaConf's own message names the value and the allowed names but not the key (that follows on
    another line), and a value of another type (``train.precision=1.5``, ``wandb.mode=null``) gets a
    message that names neither."""
    cause = error if isinstance(error, ValidationError) else error.__cause__
    if not isinstance(cause, ValidationError):
        return None
    if isinstance(cause.child_node, EnumNode):
        choice = cause.child_node.enum_type
    else:  # an element of a list: the list's declared type says of what
        element_types = typing.get_args(cause.ref_type)
        choice = element_types[0] if element_types else None
    if not (isinstance(choice, type) and issubclass(choice, Enum)):
        return None
    allowed = ", ".join(str(member.value) for member in choice)
    return f"{cause.full_key}={cause.value!r} is not allowed: use one of {allowed}"


def config_source() -> str:
    """Where Hydra reads the configs: ``pkg://stiefel_gan.configs`` when that package belongs to the
    imported ``stiefel_gan`` (a wheel, or an editable install mapping ``configs/``), else the
    checkout's own ``configs/`` directory (``PYTHONPATH`` pointing at a source tree)."""
    package_dir = Path(__file__).resolve().parents[1]
    try:
        spec = importlib.util.find_spec(CONFIG_PACKAGE)
    except ImportError:
        spec = None
    locations = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    # another checkout's editable install can answer for the name: only ours counts
    if any(location in (package_dir / "configs", SOURCE_CONFIG_DIR) for location in locations):
        return f"pkg://{CONFIG_PACKAGE}"
    return str(SOURCE_CONFIG_DIR)


def config_files():
    """The configs as a directory-like object (``/``, ``iterdir``, ``read_text``): the package's
    resources, or the checkout's ``configs/`` (see :func:`config_source`)."""
    source = config_source()
    if source.startswith("pkg://"):
        return importlib.resources.files(CONFIG_PACKAGE)
    return Path(source)


def _register_resolvers() -> None:
    """``${sg_run_name:...}`` and ``${sg_run_dir:...}``: the run directory names of
    ``configs/config.yaml``'s ``hydra.run.dir`` / ``hydra.sweep.subdir``, computed by the same
    function the runner uses."""
    if not OmegaConf.has_resolver("sg_run_name"):
        OmegaConf.register_new_resolver(
            "sg_run_name", lambda run_name, variant, disc, optim, seed: run_name_for(run_name, variant, disc, optim, seed))
    if not OmegaConf.has_resolver("sg_run_dir"):
        # resume=<run dir> runs in that directory; anything else (null, auto) in out_dir/name/run
        OmegaConf.register_new_resolver(
            "sg_run_dir", lambda out_dir, name, run, resume: str(resume) if resume not in (None, "auto")
            else f"{out_dir}/{name}/{run}")
    if not OmegaConf.has_resolver("sg_hydra_records"):
        # resume=<run dir> keeps the run's own .hydra/ records (the command that made it) untouched
        OmegaConf.register_new_resolver(
            "sg_hydra_records", lambda resume: None if resume not in (None, "auto") else HYDRA_DIR)


register_configs()
_register_resolvers()


def expose_sweeper_plugin() -> None:
    """Make Hydra's plugin scan see ``hydra_plugins.stiefel_gan_sweeper`` in every kind of install.

    Note [plugins in an editable install]
        Hydra finds plugins by walking the ``hydra_plugins`` namespace package's ``__path__`` with
        pkgutil. A wheel puts ``hydra_plugins/`` in site-packages, on that path; setuptools' editable
        install maps the package through an import hook instead, which pkgutil cannot walk, so
        ``pip install -e .`` followed by ``stiefel-gan train -m`` failed with "Unknown plugin class"
        unless the working directory happened to be the checkout. Importing the plugin package through
        that hook gives its real directory, whose parent joins the namespace path.
    """
    spec = importlib.util.find_spec(SWEEPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return
    import hydra_plugins

    plugin_root = str(Path(next(iter(spec.submodule_search_locations))).parent)
    if plugin_root not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(plugin_root)


def _initialize():
    expose_sweeper_plugin()
    GlobalHydra.instance().clear()
    source = config_source()
    if source.startswith("pkg://"):
        return initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3")
    return initialize_config_dir(config_dir=source, version_base="1.3")


def _hydra_override(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


#: groups listed as ``optional`` in configs/config.yaml: Hydra skips an option of theirs that does not
#: exist without a word, so a misspelled study or variant would silently run the defaults
OPTIONAL_GROUPS = ("experiment", "variant")


def check_optional_groups(overrides: Sequence[str]) -> None:
    """Refuse ``experiment=<x>`` / ``variant=<x>`` when ``configs/<group>/<x>.yaml`` does not exist."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key not in OPTIONAL_GROUPS or value in ("", "null"):
            continue
        folder = config_files() / key
        options = sorted(p.name[:-len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
        if value not in options:
            raise UsageError(f"{key}={value!r} is not allowed: use one of {', '.join(options)} (configs/{key}/)")


def compose_config(overrides: Sequence[str]) -> Config:
    """Compose ``configs/config.yaml`` with Hydra overrides into a typed :class:`Config`."""
    check_optional_groups(overrides)
    try:
        with _initialize():
            composed = compose("config", overrides=[o for o in overrides if not _hydra_override(o)])
        return OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as error:
        choice = refused_choice(error)
        if choice is not None:
            raise UsageError(choice) from None
        # Hydra says which override failed; OmegaConf's cause says why
        cause = error.__cause__
        text = one_line(error)
        reason = str(cause).splitlines()[0] if isinstance(cause, OmegaConfBaseException) and str(cause) else ""
        raise UsageError(f"{text}: {reason}" if reason and reason not in text else text) from None
    finally:
        GlobalHydra.instance().clear()


def resume_config(overrides: Sequence[str]) -> Config:
    """``resume=<run dir>``: the run's own saved config, plus ``key=value`` overrides (train.steps=...)."""
    resume = next(o.split("=", 1)[1] for o in overrides if o.startswith("resume="))
    saved = load_run_config(Path(resume))
    others = [o for o in overrides if not o.startswith("resume=") and not _hydra_override(o)]
    groups = {"data", "model", "disc", "optim", "loss", "experiment", "variant"}
    bad = [o for o in others if "=" not in o or o.split("=", 1)[0].lstrip("+~") in groups]
    if bad:
        raise UsageError(f"{bad[0]!r} is not allowed with resume=: the run keeps its own config groups; "
                         "pass key=value overrides such as train.steps=2000")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(saved), OmegaConf.from_dotlist(others), {"resume": resume})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise UsageError(refused_choice(error) or one_line(error)) from None


def resumes_a_directory(overrides: Sequence[str]) -> bool:
    return any(o.startswith("resume=") and o != "resume=auto" for o in overrides)


def job_config(overrides: Sequence[str]) -> Config:
    """The typed config of one job: composed, or a run's own config for ``resume=<run dir>``."""
    return resume_config(overrides) if resumes_a_directory(overrides) else compose_config(overrides)


def load_run_config(run_dir: Path) -> Config:
    """The typed config saved in a run directory."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise ValueError(f"resume={run_dir} is not allowed: {path} does not exist (resume takes a run directory)")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))

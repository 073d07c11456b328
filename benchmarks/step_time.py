"""Time one discriminator update for every D parameterization, side by side, in one process.

    python benchmarks/step_time.py                          # CPU, 2 threads, all models and variants
    python benchmarks/step_time.py --quick --models digits  # a smoke run
    python benchmarks/step_time.py --device cuda --json runs/bench/step_time_cuda.json
    python benchmarks/step_time.py --variants sn,stiefel_fixed/qr optim=rsgd   # Hydra overrides last

What is timed (each model, each variant)
    ``d_update``: the training loop's own D update, :func:`stiefel_gan.gan.train.discriminator_step`
    (forward of ``torch.cat((real, fake))``, loss plus ``GAN.penalty(...)``, weight clipping after the step, ``zero_grad``, backward,
    ``opt_d.step()``: power iteration, retraction...), on fixed ``real`` and ``fake`` batches: loading
    data and sampling G are no cost of D's parameterization (they are in ``iteration``). The optimizer
    step is also reported apart (``optimizer_step``, timed by the optimizer's step hooks) and
    ``forward_backward`` is the rest.
    ``iteration``: one generator update as the loop does it, with the loop's functions: ``n_dis`` times
    :func:`~stiefel_gan.gan.train.sample_fake` and ``discriminator_step``, then
    :func:`~stiefel_gan.gan.train.generator_step` (logging, metrics and checkpoints excluded).

Every model is built the way a run builds it: ``stiefel_gan.config.compose.compose_config`` (Hydra, the real
``configs/``), ``check_config``, ``data_shape``, ``build_gan``, ``GAN.optimizers``, and steps in the
config's ``train.precision`` (``--precision`` sets it). The peers (``PEERS``) start from the same D
with ``disc=none`` and constrain its layers with another library's machinery (see ``PEERS``).

FLOP floor (``floor`` in the table)
    A Stiefel step needs at least the Riemannian gradient's ``X^T G``, the retraction's Gram matrix and
    its triangular solve: ``2 + 2 + 1 = 5 n p^2`` FLOPs per ``n x p`` factor (the fused ``matrix`` step
    does ``9 n p^2``, ``entry`` ``7 n p^2``, geoopt's ``11 n p^2``). ``floor`` is the ratio to SN a D
    update would have if its only extra cost were those FLOPs at the speed of D's own forward and
    backward (``torch.utils.flop_counter`` counts those): ``1 + floor FLOPs / forward-backward FLOPs``.

Method
    All variants of a model live in one process and are timed round-robin: each repetition runs every
    variant once, starting from a different variant each time, so drift in the machine's load hits all
    variants alike. ``--warmup`` untimed rounds come first (Adam state, allocator, oneDNN caches). The
    garbage collector is off while timing; on CUDA, ``torch.cuda.synchronize`` brackets every timed
    piece. Reported: median, quartiles, min and max; ratios are ratios of medians (the JSON adds the
    median of the per-round ratios, paired within a round, which is more robust to load changes).

Peak memory of one D update (``--no-memory`` skips it)
    Measured in a fresh subprocess per variant, so that no other variant's tensors or allocator cache
    count. The subprocess first builds the GAN and runs one D update unmeasured (library code pages,
    oneDNN and LAPACK one-time caches), frees it, then takes the baseline, builds the GAN and its
    optimizers again and runs two D updates (the first allocates the optimizer state). CPU: the
    process's resident-set high-water mark (VmHWM, the counter behind ``ru_maxrss``, reset at the
    baseline through ``/proc/self/clear_refs``) minus the resident set at the baseline; see Note
    [resetting the high-water mark]. CUDA: ``torch.cuda.max_memory_allocated()`` minus
    ``memory_allocated()`` at the baseline. The exact bytes of G's parameters and buffers are
    subtracted (G is built with D but is no part of D's update), so the figure is D's parameters,
    buffers, gradients, optimizer state, activations kept for backward and the step's temporaries, at
    their peak. The RSS method resolves about 1 MB; ``state_bytes`` adds the exact persistent part
    (D's parameters, buffers, gradients and optimizer state, summed tensor sizes).

Spectral diagnostics (``--no-spectral`` skips them)
    Per call, for every conv layer of each model's D at the spatial size it really sees:
    ``conv_singular_values`` (exact circular spectrum by FFT) and ``conv_operator_norm`` with 50 power
    iterations (``tol=0``: all of them run).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import geoopt  # noqa: E402
import torch  # noqa: E402
from harness import Clock, add_common_arguments, check_common_arguments, environment, gc_paused, summarize, write_json  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn.utils import parametrizations  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from stiefel_gan.config.checks import check_config  # noqa: E402
from stiefel_gan.config.compose import compose_config  # noqa: E402
from stiefel_gan.config.schema import PRECISIONS  # noqa: E402
from stiefel_gan.data.datasets import data_shape  # noqa: E402
from stiefel_gan.gan.builder import GAN, build_gan  # noqa: E402
from stiefel_gan.gan.train import Precision, discriminator_step, generator_step, sample_fake  # noqa: E402
from stiefel_gan.manifold import FixedCurve, make_optimizer, stiefel_layers, stiefelize  # noqa: E402
from stiefel_gan.spectral import conv_operator_norm, conv_singular_values  # noqa: E402

#: Hydra overrides that select each model. ``standard``: Miyato's standard CNN at 32 px, width 64 (the
#: paper's model); ``resnet``: the SN-GAN ResNet for CIFAR-10 at the paper's widths; ``digits``: the
#: default model of ``stiefel-gan compare`` (configs/experiment/compare.yaml).
MODELS = {
    "standard": ["data=cifar10", "model=standard_cnn"],
    "resnet": ["data=cifar10", "model=resnet"],
    "digits": ["experiment=compare"],
}

#: Hydra overrides that select each D parameterization: the Stiefel kinds once per retraction, with the
#: fused RiemannianAdam (``matrix``, the default), its per-entry variant (``+entry``), fused RSGD with
#: momentum (``+rsgd``) and geoopt's own RiemannianAdam on the same manifolds (``+geoopt``).
SPECTRA = ("fixed", "curve", "grid")
VARIANTS = {
    "none": ["disc=none"],
    "sn": ["disc=sn"],
    "fair_sn": ["disc=fair_sn"],
    "ortho_reg": ["disc=ortho_reg"],
    "wc": ["disc=wc"],
    "wn": ["disc=wn"],
    "gp": ["disc=gp"],
    **{f"stiefel_{spectrum}/{retraction}": [f"disc=stiefel_{spectrum}", f"disc.retraction={retraction}"]
       for spectrum in SPECTRA for retraction in ("qr", "cayley")},
    "stiefel_svd": ["disc=stiefel_svd"],
    **{f"stiefel_{spectrum}/{retraction}+entry": [f"disc=stiefel_{spectrum}", f"disc.retraction={retraction}",
                                                  "optim.second_moment=entry"]
       for spectrum in SPECTRA for retraction in ("qr", "cayley")},
    "stiefel_svd+entry": ["disc=stiefel_svd", "optim.second_moment=entry"],
    "stiefel_fixed/qr+rsgd": ["disc=stiefel_fixed", "optim.name=rsgd", "optim.momentum=0.9"],
    "stiefel_fixed/qr+geoopt": ["disc=stiefel_fixed", "optim.name=geoopt_radam"],
}


class _ReshapedKernel(nn.Module):
    """A Conv2d / Linear whose weight is held as the reshaped ``c_out x (c_in kh kw)`` matrix, so that a
    matrix constraint (geotorch, torch's ``orthogonal``) acts on Miyato's reshaped kernel, as the
    Stiefel layers do (both libraries would otherwise constrain each ``kh x kw`` slice of a conv kernel)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.shape = tuple(layer.weight.shape)
        matrix = layer.weight.detach().reshape(self.shape[0], -1)
        del layer.weight
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, input: Tensor) -> Tensor:
        weight = self.matrix.reshape(self.shape)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(input, weight, self.layer.bias)
        return nn.functional.linear(input, weight, self.layer.bias)


def _replace_layers(model: nn.Module, wrap: Callable[[nn.Module], nn.Module]) -> None:
    for name, child in list(model.named_children()):
        if type(child) in (nn.Conv2d, nn.Linear):
            setattr(model, name, wrap(child))
        else:
            _replace_layers(child, wrap)


def _orthogonal(library: str) -> Callable[[nn.Module], nn.Module]:
    def wrap(layer: nn.Module) -> nn.Module:
        reshaped = _ReshapedKernel(layer)
        if library == "geotorch":
            import geotorch  # an optional peer (the bench extra): check_args has made sure it imports

            geotorch.orthogonal(reshaped, "matrix")  # its default trivialization ("expm")
        else:
            parametrizations.orthogonal(reshaped, "matrix")  # torch's default (matrix_exp, use_trivialization)
        return reshaped
    return wrap


def _geoopt_manifold(manifold: geoopt.Manifold) -> Callable[[GAN, object], torch.optim.Optimizer]:
    """The project's Stiefel D (fixed curve) with its factors put on ``manifold``, stepped by geoopt's RiemannianAdam."""
    def build(gan: GAN, cfg) -> torch.optim.Optimizer:
        stiefelize(gan.discriminator, FixedCurve(tau=cfg.disc.tau, eps=cfg.disc.eps, sigma=cfg.disc.sigma))
        for _, layer in stiefel_layers(gan.discriminator):
            for factor in layer.parametrization.stiefel_factors():
                factor.manifold = manifold
        return make_optimizer(gan.discriminator, "geoopt_radam", lr=cfg.optim.lr_d,
                              betas=(cfg.optim.beta1, cfg.optim.beta2))
    return build


def _adam_after(transform: Callable[[nn.Module], None]) -> Callable[[GAN, object], torch.optim.Optimizer]:
    def build(gan: GAN, cfg) -> torch.optim.Optimizer:
        transform(gan.discriminator)
        return torch.optim.Adam(gan.discriminator.parameters(), lr=cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    return build


#: Other libraries' ways to constrain the same D (built with ``disc=none``): name -> (D, cfg) -> D's optimizer.
PEERS = {
    "peer:geoopt_stiefel": _geoopt_manifold(geoopt.Stiefel()),  # geoopt's stock (canonical) Stiefel()
    "peer:geoopt_euclidean_stiefel": _geoopt_manifold(geoopt.EuclideanStiefel()),  # Householder QR retraction
    "peer:geotorch_orthogonal": _adam_after(lambda d: _replace_layers(d, _orthogonal("geotorch"))),
    "peer:torch_orthogonal": _adam_after(lambda d: _replace_layers(d, _orthogonal("torch"))),
    "peer:torch_sn": _adam_after(lambda d: _replace_layers(d, parametrizations.spectral_norm)),
}
ALL_VARIANTS = (*VARIANTS, *PEERS)
#: peers that need a package outside the suite's own requirements: variant -> (module, the extra that has it)
OPTIONAL_PEERS = {"peer:geotorch_orthogonal": ("geotorch", "bench")}

#: Power iterations of the timed ``conv_operator_norm`` diagnostic.
POWER_ITERATIONS = 50
#: glibc's mmap threshold in the memory probes (Note [resetting the high-water mark]).
MMAP_THRESHOLD = 64 * 1024
#: Repetitions and warm-up rounds of ``--quick``.
QUICK_REPS, QUICK_WARMUP = 3, 1


def _comma_list(text: str, allowed, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{what} {unknown or text!r} not allowed: use any of {', '.join(allowed)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every variant (optim=rsgd ...)")
    add_common_arguments(parser, reps=None, warmup=None)
    parser.add_argument("--models", type=lambda s: _comma_list(s, MODELS, "models"), default=list(MODELS),
                        help=f"comma-separated, any of {','.join(MODELS)} (default all)")
    parser.add_argument("--variants", type=lambda s: _comma_list(s, ALL_VARIANTS, "variants"),
                        default=None, help=f"comma-separated, any of {','.join(ALL_VARIANTS)} (default: all whose "
                        "libraries are installed)")
    parser.add_argument("--batch-size", type=int, default=None, help="train.batch_size (default: the config's, 64)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=None,
                        help="train.precision (default: the config's, fp32)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run (reps 3, warm-up 1)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory probes")
    parser.add_argument("--no-spectral", dest="spectral", action="store_false",
                        help="skip timing the spectral diagnostics")
    parser.add_argument("--no-iteration", dest="iteration", action="store_false",
                        help="time the D update only, not the full G+D iteration")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    return parser


def _peer_installed(variant: str) -> bool:
    """False for an optional peer whose library is not installed (imported only when it is timed)."""
    module, _ = OPTIONAL_PEERS.get(variant, (None, None))
    return module is None or importlib.util.find_spec(module) is not None


def check_args(args: argparse.Namespace) -> None:
    """One-line ValueErrors for bad values, before anything is built."""
    if args.reps is None:
        args.reps = QUICK_REPS if args.quick else 15
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else 3
    check_common_arguments(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is not allowed: use an integer >= 1")
    if args.precision == "fp16" and args.device.type != "cuda":
        raise ValueError("--precision fp16 is not allowed on cpu: use bf16 or fp32")
    if args.variants is None:
        missing = [v for v in ALL_VARIANTS if not _peer_installed(v)]
        args.variants = [v for v in ALL_VARIANTS if v not in missing]
        for variant in missing:
            module, extra = OPTIONAL_PEERS[variant]
            print(f"step_time.py: {variant} skipped: {module} is not installed (python -m pip install -e "
                  f"\".[{extra}]\")", file=sys.stderr)
    for variant in args.variants:
        if not _peer_installed(variant):
            module, extra = OPTIONAL_PEERS[variant]
            raise ValueError(f"--variants {variant} is not allowed here: it needs {module}, which is not installed "
                             f"(python -m pip install -e \".[{extra}]\", or leave {variant} out of --variants)")
    # the options that change the config travel as Hydra overrides (also into the memory subprocesses)
    args.overrides = [*args.overrides, *([f"train.batch_size={args.batch_size}"] if args.batch_size else []),
                      *([f"train.precision={args.precision}"] if args.precision else [])]
    args.batch_size = args.precision = None


# --------------------------------------------------------------------------------------------------
# Building and stepping one variant with the training loop's own functions
# --------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One GAN of one variant, with fixed input batches, stepped by ``stiefel_gan.gan.train``'s functions."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    real: Tensor
    fake: Tensor
    loss: str
    n_dis: int
    z_generator: torch.Generator
    device: torch.device
    precision: Precision

    @property
    def batch_size(self) -> int:
        return self.real.shape[0]

    def d_update(self, fake: Tensor | None = None) -> None:
        discriminator_step(self.gan, self.opt_d, self.real, self.fake if fake is None else fake, self.loss,
                           self.precision, self.z_generator)

    def iteration(self) -> None:
        """One generator update, as ``stiefel_gan.gan.train.train`` does it (its data loading aside)."""
        for _ in range(self.n_dis):
            self.d_update(sample_fake(self.gan, self.batch_size, self.z_generator, self.device, self.precision))
        z = self.gan.generator.sample_z(self.batch_size, self.z_generator, self.device)
        generator_step(self.gan, self.opt_g, z, self.loss, self.precision)


def compose(model: str, variant: str, overrides: list[str]):
    """The config of a variant (a peer starts from ``disc=none``)."""
    cfg = compose_config([*MODELS[model], *VARIANTS.get(variant, ["disc=none"]), *overrides])
    check_config(cfg, require_data=False)  # random batches of the data's shape: its files are not read
    return cfg


def input_batches(cfg, device: torch.device) -> tuple[Tensor, Tensor]:
    """A real-like and a fake-like batch in [-1, 1] (their values do not change the cost)."""
    shape = data_shape(cfg.data.name, cfg.data.image_size)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    real, fake = (torch.rand(cfg.train.batch_size, *shape, generator=generator) * 2 - 1 for _ in range(2))
    return real.to(device), fake.to(device)


def build_bench(cfg, variant: str, device: torch.device, real: Tensor, fake: Tensor) -> Bench:
    torch.manual_seed(cfg.train.seed)  # same initial weights for every variant, as in a run
    gan = build_gan(cfg, data_shape(cfg.data.name, cfg.data.image_size))
    if variant in PEERS:
        opt_g, _ = gan.optimizers(cfg.optim)
        opt_d = PEERS[variant](gan, cfg)
    gan = gan.to(device)
    if variant not in PEERS:
        opt_g, opt_d = gan.optimizers(cfg.optim)
    elif device.type != "cpu":
        raise ValueError(f"variant {variant} is built on the CPU only: run it with --device cpu")
    if cfg.train.compile:  # as the runner does (train.compile=true as a trailing override)
        gan.generator.compile()
        gan.discriminator.compile()
    return Bench(gan, opt_g, opt_d, real, fake, cfg.loss.name, cfg.optim.n_dis,
                 torch.Generator().manual_seed(cfg.train.seed), device, Precision.build(cfg.train.precision, device))


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


class StepTimer:
    """Times ``optimizer.step()`` from inside the D update, through the optimizer's step hooks."""

    def __init__(self, optimizer: torch.optim.Optimizer, clock: Clock):
        self.clock, self.start, self.seconds = clock, 0.0, 0.0
        optimizer.register_step_pre_hook(self._before)
        optimizer.register_step_post_hook(self._after)

    def _before(self, optimizer, args, kwargs) -> None:
        self.start = self.clock.now()

    def _after(self, optimizer, args, kwargs) -> None:
        self.seconds = self.clock.now() - self.start


def time_variants(benches: dict[str, Bench], reps: int, warmup: int, clock: Clock,
                  with_iteration: bool) -> dict[str, dict[str, list[float]]]:
    """Round-robin timing; returns, per variant, the raw seconds of each timed piece."""
    names = list(benches)
    pieces = ("d_update", "forward_backward", "optimizer_step") + (("iteration",) if with_iteration else ())
    times = {name: {piece: [] for piece in pieces} for name in names}
    for _ in range(warmup):
        for bench in benches.values():
            bench.d_update()
            if with_iteration:
                bench.iteration()
    timers = {name: StepTimer(bench.opt_d, clock) for name, bench in benches.items()}
    with gc_paused():
        for rep in range(reps):
            shift = rep % len(names)  # a different variant goes first in each round
            for name in names[shift:] + names[:shift]:
                bench, record = benches[name], times[name]
                start = clock.now()
                bench.d_update()
                total = clock.now() - start
                record["d_update"].append(total)
                record["optimizer_step"].append(timers[name].seconds)
                record["forward_backward"].append(total - timers[name].seconds)
                if with_iteration:
                    start = clock.now()
                    bench.iteration()
                    record["iteration"].append(clock.now() - start)
    return times


def ratios(times: dict[str, dict[str, list[float]]], reference: str) -> dict[str, dict[str, float]]:
    """Per variant and piece: ratio of medians to ``reference`` and the median of per-round ratios."""
    out = {}
    for name, pieces in times.items():
        out[name] = {}
        for piece, values in pieces.items():
            ref = times[reference][piece]
            out[name][piece] = {"of_medians": statistics.median(values) / statistics.median(ref),
                                "paired_median": statistics.median(v / r for v, r in zip(values, ref))}
    return out


# --------------------------------------------------------------------------------------------------
# Peak memory, in a fresh process per variant
# --------------------------------------------------------------------------------------------------


def tensor_bytes(tensors) -> int:
    """Total size of distinct tensors (shared storage counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def d_state_bytes(bench: Bench) -> int:
    """Exact persistent bytes of D: parameters, buffers, gradients and optimizer state."""
    discriminator = bench.gan.discriminator
    state = [v for s in bench.opt_d.state.values() for v in s.values() if torch.is_tensor(v)]
    return tensor_bytes([*discriminator.parameters(), *discriminator.buffers(),
                         *(p.grad for p in discriminator.parameters()), *state])


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_rss_high_water() -> tuple[int, str]:
    """Start a CPU peak measurement; returns (baseline bytes, method name).

    Note [resetting the high-water mark]
        ``ru_maxrss`` cannot be reset, and the imports (torch, Hydra) leave it above what a small D
        update ever needs: the digits model then measures 0. Linux resets the same counter, the
        process's VmHWM, when ``5`` is written to ``/proc/self/clear_refs``; the baseline is then the
        current VmRSS. Without that file, the ``ru_maxrss`` difference is the fallback.

        The probe runs with ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB, so glibc maps every tensor buffer on
        its own and unmaps it when freed: memory freed by the unmeasured warm-up build is given back and
        cannot hide the measured build's allocations inside the baseline.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_bytes("VmRSS"), "VmHWM after reset minus VmRSS before"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss after minus before"


def rss_high_water(method: str) -> int:
    if method.startswith("VmHWM"):
        return _proc_status_bytes("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_probe(model: str, variant: str, args: argparse.Namespace) -> dict:
    """Runs in the subprocess: peak bytes of building D and two D updates, G's bytes excluded."""
    cfg = compose(model, variant, args.overrides)
    device = args.device
    real, fake = input_batches(cfg, device)
    # a first, unmeasured build and update pages in the library code and one-time caches (oneDNN,
    # LAPACK): they are no cost of the variant (Note [resetting the high-water mark])
    bench = build_bench(cfg, variant, device, real, fake)
    bench.d_update()
    del bench
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline, method = torch.cuda.memory_allocated(device), "cuda max_memory_allocated"
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline, method = reset_rss_high_water()
    bench = build_bench(cfg, variant, device, real, fake)
    for _ in range(2):
        bench.d_update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = rss_high_water(method)
    generator = bench.gan.generator
    generator_bytes = tensor_bytes([*generator.parameters(), *generator.buffers()])
    return {"peak_bytes": peak - baseline - generator_bytes, "state_bytes": d_state_bytes(bench),
            "generator_bytes": generator_bytes, "method": method}


def measure_memory(model: str, variant: str, args: argparse.Namespace) -> dict:
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", model, variant, "--variants", variant,
               "--device", str(args.device), "--threads", str(args.threads), *args.overrides]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment,
                            cwd=Path(__file__).resolve().parent.parent)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe {model}/{variant} failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Spectral diagnostics
# --------------------------------------------------------------------------------------------------


def conv_input_sizes(discriminator: nn.Module, input_shape, device) -> dict[str, tuple[int, int]]:
    """The spatial size each ``nn.Conv2d`` of ``discriminator`` sees, from one forward of a zero sample."""
    sizes, hooks = {}, []

    def record(name: str) -> Callable:
        def hook(module, inputs, output) -> None:  # returns None: the output is left as it is
            sizes[name] = tuple(inputs[0].shape[-2:])
        return hook

    for name, module in discriminator.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            discriminator(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def time_spectral(model: str, args: argparse.Namespace, clock: Clock) -> dict:
    """Per conv layer of the unparameterized D: the FFT spectrum and 50 power iterations, per call."""
    cfg = compose(model, "none", args.overrides)
    torch.manual_seed(cfg.train.seed)
    shape = data_shape(cfg.data.name, cfg.data.image_size)
    discriminator = build_gan(cfg, shape).discriminator.to(args.device)
    sizes = conv_input_sizes(discriminator, shape, args.device)
    convs = dict(discriminator.named_modules())
    calls = {}
    for name, size in sizes.items():
        conv = convs[name]
        weight = conv.weight.detach()
        calls[name] = {"power_iteration": lambda w=weight, s=size, c=conv: conv_operator_norm(
            w, s, c.stride, c.padding, c.dilation, n_iter=POWER_ITERATIONS, tol=0.0)}
        # the circular spectrum needs the kernel to fit in the input (not so for a 3x3 kernel on 2x2)
        if weight.shape[-2] <= size[0] and weight.shape[-1] <= size[1]:
            calls[name]["fft_spectrum"] = lambda w=weight, s=size: conv_singular_values(w, s)
    times = {name: {kind: [] for kind in pair} for name, pair in calls.items()}
    for pair in calls.values():
        for call in pair.values():
            call()  # warm-up
    with gc_paused():
        for _ in range(args.reps):
            for name, pair in calls.items():
                for kind, call in pair.items():
                    start = clock.now()
                    call()
                    times[name][kind].append(clock.now() - start)
    kinds = ("fft_spectrum", "power_iteration")
    layers = [{"layer": name, "kernel": list(convs[name].weight.shape), "input_size": list(sizes[name]),
               **{kind: summarize(times[name][kind]) if kind in times[name] else None for kind in kinds}}
              for name in calls]
    totals = {kind: sum(layer[kind]["median_ms"] for layer in layers if layer[kind]) for kind in kinds}
    return {"power_iterations": POWER_ITERATIONS, "layers": layers, "total_median_ms": totals}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def model_description(cfg) -> str:
    shape = "x".join(map(str, data_shape(cfg.data.name, cfg.data.image_size)))
    widths = f"G width {cfg.model.g_width or 'paper'}, D width {cfg.model.d_width or 'paper'}"
    return (f"{cfg.model.arch} {shape}, z {cfg.model.z_dim}, {widths}, batch {cfg.train.batch_size}, "
            f"optim {cfg.optim.name}, loss {cfg.loss.name}, n_dis {cfg.optim.n_dis}")


def _ratio(result: dict, reference: str, piece: str) -> str:
    ratio = result.get(f"ratio_to_{reference}", {}).get(piece)
    return f"{ratio['of_medians']:.2f}" if ratio else "-"


def format_table(model: str, result: dict) -> str:
    flops = result["flops"]
    floor = flops["floor_ratio_to_sn"]
    lines = [f"\n== {model}: {result['description']}",
             f"D forward+backward {flops['forward_backward_flops'] / 1e9:.2f} GFLOP; Stiefel step floor "
             f"{flops['floor_step_flops'] / 1e9:.3f} GFLOP (fused matrix {flops['step_flops']['matrix'] / 1e9:.3f}, "
             f"entry {flops['step_flops']['entry'] / 1e9:.3f}, geoopt {flops['step_flops']['geoopt'] / 1e9:.3f}): "
             f"floor = {floor:.3f}x SN; 'x floor' = (x sn) / floor"]
    header = (f"{'variant':30s} {'D update ms':>11s} {'[q1, q3]':>17s} {'fwd+bwd':>8s} {'opt step':>8s} "
              f"{'x none':>6s} {'x sn':>5s} {'x floor':>7s} {'G+D iter':>9s} {'x sn':>5s} {'peak MB':>8s} {'x sn':>5s}")
    lines += [header, "-" * len(header)]
    for name, v in result["variants"].items():
        d = v["d_update"]
        iteration = v.get("iteration")
        memory = v.get("memory")
        sn_memory = result["variants"].get("sn", {}).get("memory")
        memory_ratio = f"{memory['peak_bytes'] / sn_memory['peak_bytes']:.2f}" if memory and sn_memory else "-"
        spread = f"[{d['q1_ms']:.1f}, {d['q3_ms']:.1f}]"
        lines.append(
            f"{name:30s} {d['median_ms']:11.1f} {spread:>17s} "
            f"{v['forward_backward']['median_ms']:8.1f} {v['optimizer_step']['median_ms']:8.1f} "
            f"{_ratio(v, 'none', 'd_update'):>6s} {_ratio(v, 'sn', 'd_update'):>5s} "
            f"{(format(v['ratio_to_sn']['d_update']['of_medians'] / floor, '7.2f') if 'ratio_to_sn' in v else '-'):>7s} "
            f"{(format(iteration['median_ms'], '9.1f') if iteration else '-'):>9s} {_ratio(v, 'sn', 'iteration'):>5s} "
            f"{(format(memory['peak_bytes'] / 2**20, '8.1f') if memory else '-'):>8s} {memory_ratio:>5s}")
    spectral = result.get("spectral")
    if spectral:
        lines.append(f"\nspectral diagnostics per call (median ms), {spectral['power_iterations']} power iterations:")
        lines.append(f"{'layer':18s} {'kernel':>18s} {'input':>7s} {'FFT spectrum':>12s} {'power iter':>10s}")
        for layer in spectral["layers"]:
            kernel = "x".join(map(str, layer["kernel"]))
            size = "x".join(map(str, layer["input_size"]))
            fft = format(layer["fft_spectrum"]["median_ms"], "12.2f") if layer["fft_spectrum"] else f"{'n/a':>12s}"
            lines.append(f"{layer['layer']:18s} {kernel:>18s} {size:>7s} {fft} "
                         f"{layer['power_iteration']['median_ms']:10.2f}")
        totals = spectral["total_median_ms"]
        lines.append(f"{'all conv layers':18s} {'':>18s} {'':>7s} {totals['fft_spectrum']:12.2f} "
                     f"{totals['power_iteration']:10.2f}")
    return "\n".join(lines)


#: FLOPs per n x p factor and step, in units of n p^2 (module docstring, "FLOP floor"): a GEMM of
#: n x p by p x p is 2 n p^2, the triangular solve n p^2.
FLOOR_NP2 = 5
STEP_NP2 = {"matrix": 9, "entry": 7, "geoopt": 11}


def flop_floor(model: str, args: argparse.Namespace) -> dict:
    """D's forward+backward FLOPs (``none``, counted by torch) and the floor of a Stiefel step's FLOPs."""
    cfg = compose(model, "stiefel_fixed/qr", args.overrides)
    real, fake = input_batches(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    gan = build_gan(compose(model, "none", args.overrides), data_shape(cfg.data.name, cfg.data.image_size))
    with FlopCounterMode(display=False) as counter:
        gan.discriminator(torch.cat((real, fake))).sum().backward()
    stiefel = build_gan(cfg, data_shape(cfg.data.name, cfg.data.image_size))
    np2 = sum(factor.shape[-2] * factor.shape[-1] ** 2 for _, layer in stiefel_layers(stiefel.discriminator)
              for factor in layer.parametrization.stiefel_factors())
    forward_backward = counter.get_total_flops()
    return {"forward_backward_flops": forward_backward, "sum_n_p2": np2, "floor_step_flops": FLOOR_NP2 * np2,
            "step_flops": {name: units * np2 for name, units in STEP_NP2.items()},
            "floor_ratio_to_sn": 1 + FLOOR_NP2 * np2 / forward_backward}


STIEFEL_MATRIX = [f"stiefel_{s}/{r}" for s in SPECTRA for r in ("qr", "cayley")]
STIEFEL_ENTRY = [f"{name}+entry" for name in STIEFEL_MATRIX]
#: The issue's targets: (models, device types, variants, measured quantity, bound on the ratio to SN).
TARGETS = (
    (("standard",), ("cpu",), STIEFEL_MATRIX, "d_update", 1.08),
    (("standard",), ("cpu",), STIEFEL_ENTRY, "d_update", 1.04),
    (("standard",), ("cpu",), ["stiefel_svd", "stiefel_svd+entry"], "d_update", 1.15),
    (("resnet",), ("cpu",), [*STIEFEL_MATRIX, *STIEFEL_ENTRY, "stiefel_svd", "stiefel_svd+entry"], "d_update", 1.02),
    (("standard", "resnet"), ("cpu", "cuda"), [*STIEFEL_MATRIX, *STIEFEL_ENTRY, "stiefel_svd", "stiefel_svd+entry"],
     "memory", 1.05),
    (("standard", "resnet"), ("cuda",), [*STIEFEL_MATRIX, *STIEFEL_ENTRY, "stiefel_svd", "stiefel_svd+entry"],
     "d_update", 1.05),
)


def target_report(model: str, device: torch.device, result: dict) -> list[dict]:
    """Each target whose variants were measured: the ratio to SN and whether it is within the bound."""
    variants = result["variants"]
    rows = []
    for models, devices, names, quantity, bound in TARGETS:
        if model not in models or device.type not in devices or "sn" not in variants:
            continue
        for name in names:
            if name not in variants:
                continue
            if quantity == "memory":
                if "memory" not in variants[name] or "memory" not in variants["sn"]:
                    continue
                ratio = variants[name]["memory"]["peak_bytes"] / variants["sn"]["memory"]["peak_bytes"]
            else:
                ratio = variants[name]["ratio_to_sn"][quantity]["of_medians"]
            rows.append({"variant": name, "quantity": quantity, "ratio_to_sn": ratio, "bound": bound,
                         "met": ratio <= bound})
    return rows


def format_targets(rows: list[dict]) -> str:
    lines = ["\ntargets (ratio to SN, reported, not asserted):"]
    for row in rows:
        what = "peak memory" if row["quantity"] == "memory" else "D update"
        lines.append(f"  {row['variant']:26s} {what:12s} {row['ratio_to_sn']:5.2f}x  (target <= {row['bound']:.2f}x: "
                     f"{'met' if row['met'] else 'NOT met'})")
    return "\n".join(lines)


def run_model(model: str, args: argparse.Namespace, clock: Clock) -> dict:
    configs = {variant: compose(model, variant, args.overrides) for variant in args.variants}
    first = next(iter(configs.values()))
    real, fake = input_batches(first, args.device)
    benches = {variant: build_bench(cfg, variant, args.device, real, fake) for variant, cfg in configs.items()}
    times = time_variants(benches, args.reps, args.warmup, clock, args.iteration)
    variants = {name: {piece: summarize(values) for piece, values in pieces.items()} for name, pieces in times.items()}
    for reference in ("none", "sn"):
        if reference in times:
            for name, ratio in ratios(times, reference).items():
                variants[name][f"ratio_to_{reference}"] = ratio
    del benches
    if args.memory:
        for name in variants:
            variants[name]["memory"] = measure_memory(model, name, args)
    result = {"description": model_description(first), "variants": variants, "flops": flop_floor(model, args)}
    if args.spectral:
        result["spectral"] = time_spectral(model, args, clock)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as error:
        print(f"step_time.py: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe, args)))
        return 0
    clock = Clock(args.device, args.clock)
    report = {"environment": environment(args.device),
              "settings": {"clock": args.clock, "reps": args.reps, "warmup": args.warmup, "models": args.models,
                           "variants": args.variants, "overrides": args.overrides, "memory": args.memory,
                           "spectral": args.spectral, "iteration": args.iteration},
              "models": {}}
    env = report["environment"]
    print(f"torch {env['torch']}, geoopt {env['geoopt']}, {env['device']} ({env['device_name']}), "
          f"{env['threads']} threads, {args.clock} clock, {args.reps} reps after {args.warmup} warm-up rounds, "
          f"load average {env['load_average_start'][0]:.2f}")
    for model in args.models:
        result = report["models"][model] = run_model(model, args, clock)
        print(format_table(model, result), flush=True)
        result["targets"] = target_report(model, args.device, result)
        if result["targets"]:
            print(format_targets(result["targets"]), flush=True)
    report["environment"]["load_average_end"] = list(os.getloadavg())
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time one discriminator update for every D parameterization, side by side, in one process.

    python benchmarks/step_time.py                          # CPU, 2 threads, all models and variants
    python benchmarks/step_time.py --quick --models digits  # a smoke run
    python benchmarks/step_time.py --device cuda --json runs/bench/step_time_cuda.json
    python benchmarks/step_time.py --variants sn,stiefel_fixed/qr optim=rsgd   # Hydra overrides last

What is timed (each model, each variant)
    ``d_update``: exactly the D part of the training loop (``stiefel_gan.gan.train.train``): one forward
    of ``torch.cat((real, fake))``, the loss plus ``GAN.penalty(...)``, ``zero_grad``, backward and
    ``opt_d.step()`` (power iteration, retraction...). ``real`` and ``fake`` are fixed batches: loading
    data and sampling G are no cost of D's parameterization (they are in ``iteration``). The two halves
    are also reported apart: ``forward_backward`` and ``optimizer_step``.
    ``iteration``: one full generator update of the loop: ``n_dis`` D updates, each on a fresh no-grad
    sample of G, then G's update through D (the loop's logging, sampling, metrics and checkpoint hooks
    excluded).

Every model is built the way a run builds it: ``stiefel_gan.cli.compose_config`` (Hydra, the real
``configs/``), ``check_config``, ``data_shape``, ``build_gan``, ``GAN.optimizers``.

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
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# geoopt compiles helpers with torch.jit.script, which torch deprecates with a FutureWarning per helper
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

import geoopt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from stiefel_gan.cli import compose_config  # noqa: E402
from stiefel_gan.data import data_shape  # noqa: E402
from stiefel_gan.gan.builder import GAN, build_gan  # noqa: E402
from stiefel_gan.gan.losses import discriminator_loss, generator_loss  # noqa: E402
from stiefel_gan.manifold import DEFAULT_RETRACTION  # noqa: E402
from stiefel_gan.runner import check_config  # noqa: E402
from stiefel_gan.spectral import conv_operator_norm, conv_singular_values  # noqa: E402

#: Hydra overrides that select each model. ``standard``: Miyato's standard CNN at 32 px, width 64 (the
#: paper's model); ``resnet``: the SN-GAN ResNet for CIFAR-10 at the paper's widths; ``digits``: the
#: default model of ``stiefel-gan compare`` (configs/experiment/compare.yaml).
MODELS = {
    "standard": ["data=cifar10", "model=standard_cnn"],
    "resnet": ["data=cifar10", "model=resnet"],
    "digits": ["experiment=compare"],
}

#: Hydra overrides that select each D parameterization (the Stiefel kinds once per retraction).
VARIANTS = {
    "none": ["disc=none"],
    "sn": ["disc=sn"],
    "fair_sn": ["disc=fair_sn"],
    "ortho_reg": ["disc=ortho_reg"],
    "wc": ["disc=wc"],
    "wn": ["disc=wn"],
    "gp": ["disc=gp"],
    **{f"stiefel_{spectrum}/{retraction}": [f"disc=stiefel_{spectrum}", f"disc.retraction={retraction}"]
       for spectrum in ("fixed", "curve", "grid") for retraction in ("qr", "cayley")},
    "stiefel_svd": ["disc=stiefel_svd"],
}

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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 15; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 3; 1 with --quick)")
    parser.add_argument("--models", type=lambda s: _comma_list(s, MODELS, "models"), default=list(MODELS),
                        help=f"comma-separated, any of {','.join(MODELS)} (default all)")
    parser.add_argument("--variants", type=lambda s: _comma_list(s, VARIANTS, "variants"), default=list(VARIANTS),
                        help=f"comma-separated, any of {','.join(VARIANTS)} (default all)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory probes")
    parser.add_argument("--no-spectral", dest="spectral", action="store_false",
                        help="skip timing the spectral diagnostics")
    parser.add_argument("--no-iteration", dest="iteration", action="store_false",
                        help="time the D update only, not the full G+D iteration")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """One-line ValueErrors for bad values, before anything is built."""
    if args.reps is None:
        args.reps = QUICK_REPS if args.quick else 15
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else 3
    if args.reps < 1:
        raise ValueError(f"--reps {args.reps} is not allowed: use an integer >= 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} is not allowed: use an integer >= 0")
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads} is not allowed: use an integer >= 1")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not allowed: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device!r} is not allowed: use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device!r} is not allowed here: no CUDA device is available")
    args.device = device


# --------------------------------------------------------------------------------------------------
# Building and stepping one variant, exactly as a training run does
# --------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One GAN of one variant, with fixed input batches, stepped as ``stiefel_gan.gan.train.train`` does."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    real: Tensor
    fake: Tensor
    loss: str
    n_dis: int
    z_generator: torch.Generator
    device: torch.device

    @property
    def batch_size(self) -> int:
        return self.real.shape[0]

    def d_forward_backward(self, fake: Tensor) -> None:
        n = self.batch_size
        logits = self.gan.discriminator(torch.cat((self.real, fake)))
        loss_d = discriminator_loss(self.loss, logits[:n], logits[n:]) + self.gan.penalty(self.real, fake, self.z_generator)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()

    def d_update(self, fake: Tensor | None = None) -> None:
        self.d_forward_backward(self.fake if fake is None else fake)
        self.opt_d.step()
        self.gan.after_discriminator_step()

    def sample(self) -> Tensor:
        generator = self.gan.generator
        return generator(generator.sample_z(self.batch_size, self.z_generator, self.device))

    def iteration(self) -> None:
        """One generator update of the training loop: ``n_dis`` D updates, then G's."""
        discriminator = self.gan.discriminator
        for _ in range(self.n_dis):
            with torch.no_grad():
                fake = self.sample()
            self.d_update(fake)
        discriminator.requires_grad_(False)
        loss_g = generator_loss(self.loss, discriminator(self.sample()))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        discriminator.requires_grad_(True)


def compose(model: str, variant: str, overrides: list[str]):
    cfg = compose_config([*MODELS[model], *VARIANTS[variant], *overrides])
    check_config(cfg)
    return cfg


def input_batches(cfg, device: torch.device) -> tuple[Tensor, Tensor]:
    """A real-like and a fake-like batch in [-1, 1] (their values do not change the cost)."""
    shape = data_shape(cfg.data.name, cfg.data.image_size)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    real, fake = (torch.rand(cfg.train.batch_size, *shape, generator=generator) * 2 - 1 for _ in range(2))
    return real.to(device), fake.to(device)


def build_bench(cfg, device: torch.device, real: Tensor, fake: Tensor) -> Bench:
    torch.manual_seed(cfg.train.seed)  # same initial weights for every variant, as in a run
    gan = build_gan(cfg, data_shape(cfg.data.name, cfg.data.image_size)).to(device)
    opt_g, opt_d = gan.optimizers(cfg.optim)
    return Bench(gan, opt_g, opt_d, real, fake, cfg.loss.name, cfg.optim.n_dis,
                 torch.Generator().manual_seed(cfg.train.seed), device)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def summarize(seconds: list[float]) -> dict:
    """Median, quartiles, min, max in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    quartiles = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "q1_ms": quartiles[0], "q3_ms": quartiles[2],
            "min_ms": ms[0], "max_ms": ms[-1], "n": len(ms)}


class Clock:
    """Wall-clock reads that wait for the device first (CUDA kernels run asynchronously)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


@contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    with gc_paused():
        for rep in range(reps):
            shift = rep % len(names)  # a different variant goes first in each round
            for name in names[shift:] + names[:shift]:
                bench, record = benches[name], times[name]
                start = clock.now()
                bench.d_forward_backward(bench.fake)
                middle = clock.now()
                bench.opt_d.step()
                end = clock.now()
                record["forward_backward"].append(middle - start)
                record["optimizer_step"].append(end - middle)
                record["d_update"].append(end - start)
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
    bench = build_bench(cfg, device, real, fake)
    bench.d_update()
    del bench
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline, method = torch.cuda.memory_allocated(device), "cuda max_memory_allocated"
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline, method = reset_rss_high_water()
    bench = build_bench(cfg, device, real, fake)
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
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", model, variant,
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


def environment(args: argparse.Namespace) -> dict:
    device = args.device
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                            if line.startswith("model name")), platform.processor()) \
            if Path("/proc/cpuinfo").exists() else platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "geoopt": geoopt.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "git_commit": commit, "load_average_start": list(os.getloadavg())}


def model_description(cfg) -> str:
    shape = "x".join(map(str, data_shape(cfg.data.name, cfg.data.image_size)))
    widths = f"G width {cfg.model.g_width or 'paper'}, D width {cfg.model.d_width or 'paper'}"
    return (f"{cfg.model.arch} {shape}, z {cfg.model.z_dim}, {widths}, batch {cfg.train.batch_size}, "
            f"optim {cfg.optim.name}, loss {cfg.loss.name}, n_dis {cfg.optim.n_dis}")


def _ratio(result: dict, reference: str, piece: str) -> str:
    ratio = result.get(f"ratio_to_{reference}", {}).get(piece)
    return f"{ratio['of_medians']:.2f}" if ratio else "-"


def format_table(model: str, result: dict) -> str:
    lines = [f"\n== {model}: {result['description']}"]
    header = (f"{'variant':22s} {'D update ms':>11s} {'[q1, q3]':>17s} {'fwd+bwd':>8s} {'opt step':>8s} "
              f"{'x none':>6s} {'x sn':>5s} {'G+D iter':>9s} {'x sn':>5s} {'peak MB':>8s} {'x sn':>5s}")
    lines += [header, "-" * len(header)]
    for name, v in result["variants"].items():
        d = v["d_update"]
        iteration = v.get("iteration")
        memory = v.get("memory")
        sn_memory = result["variants"].get("sn", {}).get("memory")
        memory_ratio = f"{memory['peak_bytes'] / sn_memory['peak_bytes']:.2f}" if memory and sn_memory else "-"
        spread = f"[{d['q1_ms']:.1f}, {d['q3_ms']:.1f}]"
        lines.append(
            f"{name:22s} {d['median_ms']:11.1f} {spread:>17s} "
            f"{v['forward_backward']['median_ms']:8.1f} {v['optimizer_step']['median_ms']:8.1f} "
            f"{_ratio(v, 'none', 'd_update'):>6s} {_ratio(v, 'sn', 'd_update'):>5s} "
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


#: The issue's targets on the standard CNN: (variants, measured quantity, bound on the ratio to SN).
TARGETS = (
    ([f"stiefel_{spectrum}/{DEFAULT_RETRACTION}" for spectrum in ("fixed", "curve", "grid")], "d_update", 1.00),
    (["stiefel_svd"], "d_update", 1.30),
    ([f"stiefel_{spectrum}/{DEFAULT_RETRACTION}" for spectrum in ("fixed", "curve", "grid")] + ["stiefel_svd"],
     "memory", 1.20),
)


def target_report(result: dict) -> list[dict]:
    """Each target whose variants were measured: the ratio to SN and whether it is within the bound."""
    variants = result["variants"]
    rows = []
    for names, quantity, bound in TARGETS:
        for name in names:
            if name not in variants or "sn" not in variants:
                continue
            if quantity == "memory":
                if "memory" not in variants[name]:
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
        lines.append(f"  {row['variant']:20s} {what:12s} {row['ratio_to_sn']:5.2f}x  (target <= {row['bound']:.2f}x: "
                     f"{'met' if row['met'] else 'NOT met'})")
    return "\n".join(lines)


def run_model(model: str, args: argparse.Namespace, clock: Clock) -> dict:
    configs = {variant: compose(model, variant, args.overrides) for variant in args.variants}
    first = next(iter(configs.values()))
    real, fake = input_batches(first, args.device)
    benches = {variant: build_bench(cfg, args.device, real, fake) for variant, cfg in configs.items()}
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
    result = {"description": model_description(first), "variants": variants}
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
    clock = Clock(args.device)
    report = {"environment": environment(args),
              "settings": {"reps": args.reps, "warmup": args.warmup, "models": args.models,
                           "variants": args.variants, "overrides": args.overrides, "memory": args.memory,
                           "spectral": args.spectral, "iteration": args.iteration},
              "models": {}}
    env = report["environment"]
    print(f"torch {env['torch']}, geoopt {env['geoopt']}, {env['device']} ({env['device_name']}), "
          f"{env['threads']} threads, {args.reps} reps after {args.warmup} warm-up rounds, "
          f"load average {env['load_average_start'][0]:.2f}")
    for model in args.models:
        result = report["models"][model] = run_model(model, args, clock)
        print(format_table(model, result), flush=True)
        if model == "standard":
            result["targets"] = target_report(result)
            if result["targets"]:
                print(format_targets(result["targets"]), flush=True)
    report["environment"]["load_average_end"] = list(os.getloadavg())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

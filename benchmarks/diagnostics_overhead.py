"""Wall-time cost of the spectral diagnostics at their default interval on a digits run.

Trains the main job's model (``experiment=compare``) for ``--steps`` generator updates, once with
D's diagnostics at the configured interval and once with them off (``metrics.diagnostics_every=0``),
alternating the two ``--reps`` times in one process, and prints the median wall time of each and the
overhead ratio. Sample-quality metrics and the Geometry Score are off in both, so the difference is
the diagnostics alone; W&B is disabled.

    python benchmarks/diagnostics_overhead.py --steps 300 --reps 3 --json diag.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch  # noqa: E402
from harness import Clock, add_common_arguments, check_common_arguments, environment, write_json

from stiefel_gan.config.compose import compose_config
from stiefel_gan.run.runner import run


def timed_run(overrides: list[str], clock: Clock) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([*overrides, f"out_dir={out}"])
        start = clock.now()
        run(cfg)
        return clock.now() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--disc", default="stiefel_curve")
    add_common_arguments(parser, reps=3, warmup=None, device=False)
    args = parser.parse_args()
    check_common_arguments(args)
    torch.set_num_threads(args.threads)
    common = ["experiment=compare", f"disc={args.disc}", f"train.steps={args.steps}", "train.progress=false",
              "wandb.mode=disabled", "metrics.every=0", "metrics.geometry_score=false",
              f"train.threads={args.threads}"]
    default_every = compose_config(common).metrics.diagnostics_every
    variants = {"with_diagnostics": common, "without": [*common, "metrics.diagnostics_every=0"]}
    times = {name: [] for name in variants}
    clock = Clock(torch.device("cpu"), args.clock)
    timed_run([*common, "train.steps=5"], clock)  # warm-up: imports, the digits classifier cache, allocator
    for _ in range(args.reps):
        for name, overrides in variants.items():
            times[name].append(timed_run(overrides, clock))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "environment": environment(), "steps": args.steps, "disc": args.disc,
        "diagnostics_every": default_every, "seconds": times, "median_s": medians,
        "overhead": medians["with_diagnostics"] / medians["without"] - 1,
    }
    print(f"{args.steps} steps of experiment=compare disc={args.disc}, {args.threads} threads, {args.reps} reps")
    for name, median in medians.items():
        print(f"  {name:18s} median {median:7.2f} s  (all: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  diagnostics every {default_every} steps add {100 * result['overhead']:.1f}% wall time")
    write_json(args.json, result)


if __name__ == "__main__":
    main()

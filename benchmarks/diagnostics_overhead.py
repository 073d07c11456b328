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
import json
import platform
import statistics
import tempfile
import time

import torch

from stiefel_gan.cli import compose_config
from stiefel_gan.runner import run


def timed_run(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([*overrides, f"out_dir={out}"])
        start = time.perf_counter()
        run(cfg)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--disc", default="stiefel_curve")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = ["experiment=compare", f"disc={args.disc}", f"train.steps={args.steps}", "train.progress=false",
              "wandb.mode=disabled", "metrics.every=0", "metrics.geometry_score=false",
              f"train.threads={args.threads}"]
    default_every = compose_config(common).metrics.diagnostics_every
    variants = {"with_diagnostics": common, "without": [*common, "metrics.diagnostics_every=0"]}
    times = {name: [] for name in variants}
    timed_run([*common, "train.steps=5"])  # warm-up: imports, the digits classifier cache, allocator
    for _ in range(args.reps):
        for name, overrides in variants.items():
            times[name].append(timed_run(overrides))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "torch": torch.__version__, "device": "cpu", "threads": args.threads, "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"), "steps": args.steps, "disc": args.disc,
        "diagnostics_every": default_every, "seconds": times, "median_s": medians,
        "overhead": medians["with_diagnostics"] / medians["without"] - 1,
    }
    print(f"{args.steps} steps of experiment=compare disc={args.disc}, {args.threads} threads, {args.reps} reps")
    for name, median in medians.items():
        print(f"  {name:18s} median {median:7.2f} s  (all: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  diagnostics every {default_every} steps add {100 * result['overhead']:.1f}% wall time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""Time to convert torchvision classifiers with ``stiefelize``, against registering SN on the same model.

    python benchmarks/convert.py                                 # the ten models, 2 threads, 3 rounds
    python benchmarks/convert.py --models vgg11,resnet18 --polar --json runs/bench/convert.json

Each model is built once by torchvision (``weights=None, num_classes=10``; ``vit_b_16`` at
``image_size=224``, its default). Per round and model, on a fresh deep copy (the copy is not timed):

- ``stiefelize(model, from_weight=False)``: Haar-random factors, the path for a freshly constructed
  model (``haar_``: Cholesky QR of a Gaussian);
- ``apply_normalization(model, "sn")``: torch-style SN registration, the reference a user compares with;
- with ``--polar``, once per model (not repeated: minutes for vgg11): ``stiefelize(model)``, factors
  from the current weights (float32 SVD with a check), the path for a trained model.

Models are timed round-robin, a different model first in each round, garbage collector paused;
medians and min-max over ``--rounds``. Each row also reports what :func:`stiefel_summary` shows before
training: the number of Stiefel layers, the largest factor and the optimizer GFLOP per step, and the
largest ``max |X^T X - I|`` of the converted model. The load average is printed with the run: the
machine these numbers come from is shared.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

# geoopt compiles helpers with torch.jit.script, which torch deprecates with a FutureWarning per helper
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

import torch  # noqa: E402
import torchvision  # noqa: E402

from stiefel_gan.manifold import factor_costs, stiefel_layers, stiefelize  # noqa: E402
from stiefel_gan.spectral import apply_normalization  # noqa: E402

MODELS = ("resnet18", "vgg11", "densenet121", "vit_b_16", "squeezenet1_0", "mobilenet_v3_small", "efficientnet_b0",
          "convnext_tiny", "shufflenet_v2_x0_5", "regnet_y_400mf")


def parse_models(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"models {unknown or text!r} are not allowed: use any of {', '.join(MODELS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=parse_models, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--polar", action="store_true", help="also time stiefelize(from_weight=True) once per model")
    parser.add_argument("--json", type=Path, default=None)
    return parser


def timed(function, model) -> tuple[float, torch.nn.Module]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vit_b_16's attention input projections have no twin
            result = function(model)
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def convert_haar(model):
    return stiefelize(model, from_weight=False)


def convert_polar(model):
    return stiefelize(model)


def register_sn(model):
    return apply_normalization(model, "sn")


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        raise SystemExit(f"--rounds={args.rounds} / --threads={args.threads} is not allowed: use integers >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: getattr(torchvision.models, name)(weights=None, num_classes=10) for name in args.models}
    times: dict[str, dict[str, list[float]]] = {n: {"stiefel": [], "sn": []} for n in models}
    facts: dict[str, dict] = {}
    names = list(models)
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            for label, function in (("stiefel", convert_haar), ("sn", register_sn)):
                seconds, converted = timed(function, copy.deepcopy(models[name]))
                times[name][label].append(seconds)
                if label == "stiefel" and name not in facts:
                    costs = factor_costs(converted)
                    largest = max(costs, key=lambda c: c.step_flops)
                    facts[name] = {
                        "stiefel_layers": len(costs),
                        "largest_factor": f"{largest.name} {'x'.join(map(str, largest.factor_shapes[0]))}",
                        "gflop_per_step": sum(c.step_flops for c in costs) / 1e9,
                        "drift": max(float(l.parametrization.drift()) for _, l in stiefel_layers(converted)),
                    }
                del converted
    if args.polar:
        for name in names:
            times[name]["polar"] = [timed(convert_polar, copy.deepcopy(models[name]))[0]]

    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    header = "| model | stiefelize s [min, max] | SN s | x SN | from weights s | layers | largest factor | GFLOP/step | drift |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = {}
    for name in names:
        stiefel, sn = times[name]["stiefel"], times[name]["sn"]
        row = {"stiefelize_s": statistics.median(stiefel), "stiefelize_min_s": min(stiefel),
               "stiefelize_max_s": max(stiefel), "sn_s": statistics.median(sn),
               "polar_s": times[name]["polar"][0] if "polar" in times[name] else None, **facts[name]}
        row["x_sn"] = row["stiefelize_s"] / row["sn_s"]
        rows[name] = row
        polar = f"{row['polar_s']:.2f}" if row["polar_s"] is not None else "-"
        print(f"| {name} | {row['stiefelize_s']:.2f} [{row['stiefelize_min_s']:.2f}, {row['stiefelize_max_s']:.2f}] "
              f"| {row['sn_s']:.3f} | {row['x_sn']:.0f} | {polar} | {row['stiefel_layers']} | {row['largest_factor']} "
              f"| {row['gflop_per_step']:.1f} | {row['drift']:.1e} |")
    result = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds, "load_average": load,
              "models": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)

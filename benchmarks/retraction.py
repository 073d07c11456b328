"""Per-step cost of the Stiefel retractions of ``stiefel_gan.manifold.retractions`` (float32).

    python benchmarks/retraction.py                  # 4608 x 512 and 512 x 64, 2 threads
    python benchmarks/retraction.py --json runs/bench/retraction.json

For each ``n x p`` size: a Haar-random point ``X`` and a tangent step ``xi`` of Frobenius norm
``--step`` (default 1e-3, the size of a RiemannianAdam step at lr 1e-3: its direction has about unit
norm). Timed, round-robin with warm-up, median and quartiles over ``--reps``:

- ``retr``: ``QRStiefel`` and ``CayleyStiefel`` (the project's, ``O(n p^2)``);
- ``retr_transp``: the same plus the transport of a tangent vector, which is what the optimizers call;
- geoopt's ``EuclideanStiefel`` retraction (Householder QR, the reference the QR retraction must equal);
- geoopt's canonical ``geoopt.Stiefel()`` retraction, a dense ``n x n`` solve (``O(n^3)``): on the small
  size always; on the large one once, if its time extrapolated from an ``n/4``-row matrix (cubic in
  ``n``) stays under ``--canonical-limit`` seconds.

Each row also reports ``max |Y^T Y - I|`` of its output, and its distance to geoopt's Householder QR
result (for the QR retraction: the same map, so only rounding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import geoopt  # noqa: E402
import torch  # noqa: E402
from geoopt.manifolds import EuclideanStiefel  # noqa: E402
from harness import Clock, add_common_arguments, check_common_arguments, environment, round_robin, summarize, write_json

from stiefel_gan.manifold.retractions import CayleyStiefel, QRStiefel, manifold_drift  # noqa: E402

DEFAULT_SIZES = "4608x512,512x64"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            n, p = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not allowed: use NxP, e.g. 4608x512") from None
        if not 1 <= p <= n:
            raise argparse.ArgumentTypeError(f"size {item!r} is not allowed: a Stiefel point needs 1 <= p <= n")
        sizes.append((n, p))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"comma-separated NxP (default {DEFAULT_SIZES})")
    add_common_arguments(parser, reps=20, warmup=2, device=False)
    parser.add_argument("--step", type=float, default=1e-3, help="Frobenius norm of the tangent step (default 1e-3)")
    parser.add_argument("--canonical-limit", type=float, default=10.0,
                        help="run geoopt's canonical retraction on a size only if predicted under this many seconds")
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_common_arguments(args)
    if not args.step > 0:
        raise ValueError(f"--step {args.step} is not allowed: use a number > 0")


def point_and_step(n: int, p: int, step: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Haar-random ``X`` (n x p), a tangent ``xi`` with ``||xi||_F = step`` and a tangent ``v`` to transport."""
    generator = torch.Generator().manual_seed(seed)
    manifold = QRStiefel()
    x = manifold.projx(torch.randn(n, p, generator=generator))
    xi = manifold.proju(x, torch.randn(n, p, generator=generator))
    v = manifold.proju(x, torch.randn(n, p, generator=generator))
    return x, xi * (step / xi.norm()), v


def timed(call, reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def canonical_prediction(n: int, p: int, step: float) -> float:
    """Seconds for geoopt's canonical retraction at ``n x p``, extrapolated as n^3 from ``n/4`` rows."""
    rows = max(p, n // 4)
    x, xi, _ = point_and_step(rows, p, step)
    canonical = geoopt.Stiefel()
    seconds = statistics.median(timed(lambda: canonical.retr(x, xi), reps=3, warmup=1))
    return seconds * (n / rows) ** 3


def bench_size(n: int, p: int, args: argparse.Namespace) -> dict:
    x, xi, v = point_and_step(n, p, args.step)
    qr, cayley, householder = QRStiefel(), CayleyStiefel(), EuclideanStiefel()
    calls = {
        "qr retr": lambda: qr.retr(x, xi),
        "cayley retr": lambda: cayley.retr(x, xi),
        "qr retr_transp": lambda: qr.retr_transp(x, xi, v),
        "cayley retr_transp": lambda: cayley.retr_transp(x, xi, v),
        "geoopt EuclideanStiefel retr (Householder QR)": lambda: householder.retr(x, xi),
    }
    rows = {name: {**summarize(values)} for name, values in round_robin(calls, args.reps, args.warmup, Clock(torch.device("cpu"), args.clock)).items()}
    reference = householder.retr(x, xi)
    outputs = {"qr retr": qr.retr(x, xi), "cayley retr": cayley.retr(x, xi),
               "geoopt EuclideanStiefel retr (Householder QR)": reference}

    canonical = geoopt.Stiefel()
    predicted = canonical_prediction(n, p, args.step) if n > 4 * p else None
    name = "geoopt Stiefel() canonical retr"
    if predicted is None or predicted < args.canonical_limit:
        # small sizes: as many reps as the others; large ones: once (it is O(n^3))
        reps = args.reps if predicted is None or predicted < 1.0 else 1
        rows[name] = summarize(timed(lambda: canonical.retr(x, xi), reps, warmup=min(args.warmup, reps)))
        outputs[name] = canonical.retr(x, xi)
    else:
        rows[name] = {"skipped": f"predicted {predicted:.1f} s > --canonical-limit {args.canonical_limit} s"}
    if predicted is not None:
        rows[name]["predicted_s"] = predicted
    for name, y in outputs.items():
        rows[name]["drift"] = manifold_drift(y).item()
        rows[name]["max_abs_diff_to_householder"] = (y - reference).abs().max().item()
    return rows


def format_table(results: dict) -> str:
    lines = []
    for size, rows in results.items():
        lines.append(f"\n== {size} float32")
        header = f"{'method':48s} {'median ms':>10s} {'[q1, q3]':>20s} {'max|YtY-I|':>11s} {'vs Householder':>14s}"
        lines += [header, "-" * len(header)]
        for name, row in rows.items():
            if "skipped" in row:
                lines.append(f"{name:48s} {row['skipped']}")
                continue
            spread = f"[{row['q1_ms']:.2f}, {row['q3_ms']:.2f}]"
            drift = f"{row['drift']:.1e}" if "drift" in row else "-"
            diff = f"{row['max_abs_diff_to_householder']:.1e}" if "max_abs_diff_to_householder" in row else "-"
            lines.append(f"{name:48s} {row['median_ms']:10.2f} {spread:>20s} {drift:>11s} {diff:>14s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as error:
        print(f"retraction.py: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    env = environment()
    print(f"torch {env['torch']}, geoopt {env['geoopt']}, {env['threads']} threads, "
          f"step norm {args.step:g}, {args.reps} reps, load average {env['load_average_start'][0]:.2f}")
    results = {f"{n}x{p}": bench_size(n, p, args) for n, p in args.sizes}
    env["load_average_end"] = list(os.getloadavg())
    print(format_table(results))
    write_json(args.json, {"environment": env, "step": args.step, "reps": args.reps, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

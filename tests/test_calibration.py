"""``stiefel-gan calibrate``: what the metrics give samples of known quality, and the docs block it writes.

One digits calibration (n = 1,000 as in the studies, 3 seeds: at n <= 400 the held-out floor, a resample
of 450 digits with repeats, is no lower than noise of std 0.1) is computed once and read by every digits
test; the mixture and the docs file go through the command itself on ring8, whose metrics take
milliseconds.
"""

import numpy as np
import pytest
import torch

from stiefel_gan.config.compose import compose_config
from stiefel_gan.measure.calibration import calibrate
from stiefel_gan.measure.table import METRICS
from stiefel_gan.report.calibration import TITLE, block_markers

FD = "quality/digits_fd"


@pytest.fixture(scope="module")
def digits():
    return calibrate(compose_config(["+budget=digits"]), seeds=(0, 1, 2))


def mean(calibration, row, key):
    return float(np.mean(calibration.result(row).values(key)))


def test_digits_calibration_orders_real_noisy_and_untrained(digits):
    # the columns are the metric table's compared digits keys (no Geometry Score at the studies' budget)
    assert digits.columns == tuple(m.key for m in METRICS if m.goal is not None and "digits" in m.datasets
                                   and m.group != "geometry")
    floor = digits.result("held-out digits").values(FD)
    assert mean(digits, "held-out digits", FD) < mean(digits, "noise 0.1", FD) < mean(digits, "noise 0.3", FD)
    # more noise is worse in every seed, and noise 0.3 is above the floor's whole range
    assert all(a < b for a, b in zip(digits.result("noise 0.1").values(FD), digits.result("noise 0.3").values(FD)))
    assert min(digits.result("noise 0.3").values(FD)) > max(floor)
    untrained = mean(digits, "untrained G", FD)
    assert untrained == max(mean(digits, result.row.name, FD) for result in digits.results)
    assert untrained > 100 * max(floor)
    for row in ("held-out digits", "training digits", "noise 0.3", "class means"):
        assert digits.result(row).values("quality/classes_covered") == [10, 10, 10], row


def test_one_class_covers_one_class(digits):
    one = digits.result("one class")
    assert one.values("quality/classes_covered_confident") == [1, 1, 1]
    # the 2% rule can count a second class: the classifier calls 3 of the 133 training 2s an 8
    assert all(covered in (1, 2) for covered in one.values("quality/classes_covered"))
    assert all(kl > 2.0 for kl in one.values("quality/class_kl"))  # log 10 = 2.303 for a single class


@pytest.mark.parametrize("split,reference", [("train", "held_out"), ("all", "all")])
def test_the_floor_resamples_the_metrics_own_reference(split, reference):
    # independent of the calibration's rows: the evaluator's reference digits resampled by hand with the
    # floor's seed, evaluated by a DigitsEvaluator built here
    from stiefel_gan.data.images import load_digits
    from stiefel_gan.measure.calibration import sampling_floor
    from stiefel_gan.metrics.digits import DigitsEvaluator

    cfg = compose_config(["+budget=digits", f"data.split={split}"])
    (floor,) = sampling_floor(cfg, seeds=(0,)).values(FD)
    evaluator = DigitsEvaluator(reference=reference, image_size=16)

    def resampled(images):  # the floor's draw for seed 0
        return images[torch.randint(len(images), (1000,), generator=torch.Generator().manual_seed(0))]

    assert floor == pytest.approx(evaluator.frechet_distance(resampled(load_digits(16, split=reference).tensors[0])),
                                  rel=1e-6)
    if split == "all":
        # what the floor was before it followed the split: the 450 held-out digits against all 1,797, larger
        assert floor < evaluator.frechet_distance(resampled(load_digits(16, split="held_out").tensors[0]))


def test_mixture_rows_and_the_block_written_into_a_docs_file(tmp_path, capsys):
    from stiefel_gan.commands.cli import main

    docs = tmp_path / "metrics.md"
    before = "# My page\n\nSome text.\n\n## Calibration\n\nOld words.\n\n"
    after = "\n\n## Stacked digits\n\nAnother engineer's section, untouched.\n"
    start, end = block_markers("ring8")
    docs.write_text(before + f"{start}\nstale table\n{end}" + after)
    argv = ["calibrate", "data=ring8", "metrics.n_samples=500", "--out", str(docs)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    text = docs.read_text()
    assert text.startswith(before) and text.endswith(after) and "stale table" not in text
    block = text[len(before):len(text) - len(after)]
    assert block.startswith(start) and block.endswith(end) and block.strip() in printed
    assert "`stiefel-gan calibrate data=ring8 metrics.n_samples=500`" in block
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in block.splitlines() if line.startswith("| ")}
    header = lines["row"]
    assert header[2:] == ["modes_covered", "high_quality_fraction", "mode_kl |"]
    assert lines["real points"][2] == "8 ± 0" and lines["one mode"][2] == "1 ± 0"
    assert lines["mode centres"][3] == "1 ± 0"  # every point on a centre is high quality
    assert main(argv) == 0  # regenerated in place: still one block, the rest unchanged
    again = docs.read_text()
    assert again.count(start) == 1 and again.startswith(before) and again.endswith(after)


def test_a_new_docs_file_gets_the_title_and_how_to_read_it(tmp_path, capsys):
    from stiefel_gan.commands.cli import main

    docs = tmp_path / "docs" / "metrics.md"
    assert main(["calibrate", "data=grid25", "metrics.n_samples=300", "--out", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith(TITLE + "\n\n## Calibration\n")
    assert "is not made" in text or "does not claim" in text
    grid = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert grid["real points"][2] == "25 ± 0" and grid["one mode"][2] == "1 ± 0"
    assert text.index(block_markers("grid25")[0]) > text.index("## Calibration")


@pytest.mark.parametrize("overrides, named", [
    (["data=cifar10"], ("data=cifar10", "digits, ring8, grid25")),
    (["data=digits", "data.split=all"], ("data.split=all", "train")),
    (["data=ring8", "metrics.n_samples=0"], ("metrics.n_samples=0",)),
])
def test_bad_input_stops_in_one_line_and_writes_nothing(tmp_path, stops_in_one_line, overrides, named):
    out = tmp_path / "metrics.md"
    stops_in_one_line(["calibrate", *overrides, "--out", str(out)], *named)
    assert not out.exists()

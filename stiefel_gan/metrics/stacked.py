"""Mode coverage on the stacked digits: 1,000 modes, one digit per channel (stacked MNIST).

The benchmark of Metz et al. 2017 (Unrolled GAN), Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018
(PacGAN): each of the three channels of a generated image is classified by a digits classifier, the
image's mode is the triple ``100 d_0 + 10 d_1 + d_2``, and the papers report the modes that received at
least one sample (out of 1,000) and the KL of the mode histogram from uniform, on 25,600-26,000 samples.
Here each channel goes through :class:`~stiefel_gan.metrics.digits.DigitsEvaluator` (the suite's digits
classifier), and a sample counts for its mode only when all three channels are classified with softmax
probability at least :data:`~stiefel_gan.metrics.digits.CONFIDENT_PROBABILITY`: PacGAN's code counts
every sample by argmax, which gives a blob of noise a mode (docs/metrics.md, "Stacked digits").

The cost is one classifier pass per channel, ``3 N`` passes of an 8x8 CNN whatever the images show;
NaN or infinite images raise :class:`~stiefel_gan.metrics.status.MetricUnavailable` (``"nonfinite"``)
from the evaluator's input check.
"""

from __future__ import annotations

import torch

from ..data.images import STACKED_DIGITS_MODES, stacked_digit_modes
from .digits import CONFIDENT_PROBABILITY, DigitsEvaluator
from .toy import kl_from_uniform

#: Fewest generated samples a stacked-digits evaluation takes (``metrics.n_mode_samples``): 10 per mode,
#: so that a generator as balanced as the data leaves a mode empty only by chance ``e^-10`` (0.05 of
#: 1,000 modes expected empty); the papers use 25,600 (Metz et al.) and 26,000 (VEEGAN, PacGAN).
MIN_MODE_SAMPLES = 10_000


def stacked_mode_metrics(images: torch.Tensor, evaluator: DigitsEvaluator) -> dict:
    r"""Modes covered, the confident fraction and the mode KL of generated stacked digits.

    Parameters
    ----------
    images : Tensor
        ``(N, 3, H, W)`` in ``[-1, 1]``, square, ``H >= 8``: channel ``c`` is a digit.
    evaluator : DigitsEvaluator
        Its :meth:`~stiefel_gan.metrics.digits.DigitsEvaluator.probabilities` classifies each channel.

    Returns
    -------
    dict
        ``modes_covered`` (int)
            Modes with at least one confident sample (the papers' "at least one sample", VEEGAN's and
            PacGAN's rule, with the confidence condition added).
        ``n_modes`` (int)
            1,000.
        ``confident_fraction`` (float)
            Share of the ``N`` samples whose three channels all reach softmax >= 0.9: the ones that count.
        ``mode_kl`` (float)
            :math:`\mathrm{KL}(\hat p \,\|\, U_{1000}) = \sum_m \hat p_m \log(1000\, \hat p_m)` over the
            confident samples (:func:`~stiefel_gan.metrics.toy.kl_from_uniform`: empty modes contribute 0;
            ``log 1000 = 6.91`` for a single mode; NaN with no confident sample).

    Raises
    ------
    MetricUnavailable
        ``reason = "nonfinite"`` when an image has a NaN or infinite pixel.
    """
    if not (torch.is_tensor(images) and images.dim() == 4 and images.shape[1] == 3):
        raise ValueError(f"images of shape {tuple(getattr(images, 'shape', ()))} are not allowed: use stacked "
                         "digits (N, 3, H, W), one digit per channel")
    count, _, height, width = images.shape
    # each channel as a one-channel image, sample-major: rows 3i, 3i+1, 3i+2 are sample i's channels
    probabilities = evaluator.probabilities(images.reshape(count * 3, 1, height, width)).reshape(count, 3, -1)
    confidence, digits = probabilities.max(dim=2)
    confident = (confidence >= CONFIDENT_PROBABILITY).all(dim=1)
    modes = stacked_digit_modes(digits[confident])
    counts = torch.bincount(modes, minlength=STACKED_DIGITS_MODES).numpy()
    return {
        "modes_covered": int((counts > 0).sum()),
        "n_modes": STACKED_DIGITS_MODES,
        "confident_fraction": float(confident.double().mean()),
        "mode_kl": kl_from_uniform(counts),
    }

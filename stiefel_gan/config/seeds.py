"""How many paired seeds a verdict needs: the rule a study's declaration is checked against before its runs
(:mod:`.checks`, :mod:`.tuning`) and the report states beside its verdicts (:mod:`stiefel_gan.report.markdown`).

A declared comparison is tested by the exact two-sided sign-flip test of its paired differences
(:func:`stiefel_gan.measure.statistics.sign_flip_p_value`). With ``n`` pairs the smallest p-value it can give
is that of every difference having one sign, ``2 / 2^n``; Holm's first step over ``m`` comparisons needs a
p-value at most ``alpha / m``. So fewer than ``n = ceil(1 + log2(m / alpha))`` seeds can never give a verdict,
whatever the differences.
"""

from __future__ import annotations


def smallest_sign_flip_p_value(n: int) -> float:
    """``2 / 2^n = 2^(1-n)``: the smallest two-sided sign-flip p-value ``n`` pairs can give (every
    difference of one sign)."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n={n!r} is not allowed: use an int >= 1 (pairs)")
    return 2.0 ** (1 - n)


def check_alpha(alpha: float) -> None:
    """A one-line ValueError unless ``alpha`` is a level in (0, 1)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not allowed: use a level in (0, 1), e.g. 0.05")


def fewest_pairs_for_a_verdict(alpha: float, comparisons: int = 1) -> int:
    """The fewest pairs (seeds) with which any of ``comparisons`` Holm-corrected sign-flip tests can be
    called at ``alpha``: the smallest ``n`` with ``2^(1-n) <= alpha / comparisons`` (6 for one comparison
    at 0.05, 7 for two or three, 8 for four to six)."""
    check_alpha(alpha)
    if not (isinstance(comparisons, int) and comparisons >= 1):
        raise ValueError(f"comparisons={comparisons!r} is not allowed: use an int >= 1")
    n = 1
    while smallest_sign_flip_p_value(n) > alpha / comparisons:
        n += 1
    return n

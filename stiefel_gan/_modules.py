"""Selecting the layers of a model that a transformation (``stiefelize``, SN, ...) applies to."""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Iterator, Sequence, Union

from torch import nn

#: ``None`` (every layer of the right type), a predicate on ``(qualified_name, module)``,
#: or glob patterns over qualified names such as ``"layer1.*"`` or ``"fc"``.
LayerFilter = Union[None, Callable[[str, nn.Module], bool], str, Sequence[str]]


def filter_patterns(layer_filter: LayerFilter, argument: str = "include") -> list[str]:
    """The glob patterns of a filter (none for ``None`` or a callable); a one-line error for anything else."""
    if layer_filter is None or callable(layer_filter):
        return []
    patterns = [layer_filter] if isinstance(layer_filter, str) else layer_filter
    if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(
            f"{argument}={layer_filter!r} is not allowed: use None, a callable (name, module) -> bool, "
            "or glob patterns over layer names"
        )
    return list(patterns)


def _as_predicate(include: LayerFilter, argument: str = "include") -> Callable[[str, nn.Module], bool]:
    if include is None:
        return lambda name, module: True
    if callable(include):
        return include
    patterns = filter_patterns(include, argument)
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def layer_predicate(include: LayerFilter = None, exclude: LayerFilter = None) -> Callable[[str, nn.Module], bool]:
    """``(name, module) -> bool``: selected by ``include`` (everything for ``None``) and not by ``exclude``."""
    keep = _as_predicate(include)
    if exclude is None:
        return keep
    drop = _as_predicate(exclude, "exclude")
    return lambda name, module: keep(name, module) and not drop(name, module)


def check_patterns_match(names: Sequence[str], include: LayerFilter = None, exclude: LayerFilter = None,
                         what: str = "layer") -> None:
    """A one-line error for the first ``include`` / ``exclude`` glob pattern that matches none of ``names``.

    A pattern that matches nothing is a typo or a pattern written for another model; silently
    converting everything (or nothing) would hide it.
    """
    for argument, layer_filter in (("include", include), ("exclude", exclude)):
        for pattern in filter_patterns(layer_filter, argument):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                examples = ", ".join(repr(n) for n in list(names)[:4]) or "none"
                raise ValueError(f"{argument} pattern {pattern!r} is not allowed: it matches no {what} of the model "
                                 f"(there are {len(names)}, e.g. {examples})")


def select_layers(
    model: nn.Module, types: tuple[type, ...], include: LayerFilter = None
) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """Yield ``(qualified_name, module, attribute_name, parent)`` for each selected layer.

    The list is materialised first, so callers may replace the yielded modules in place.
    """
    keep = _as_predicate(include)
    selected = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            name = f"{parent_name}.{attr}" if parent_name else attr
            # exact type match: a subclass (e.g. an already converted layer) is left alone
            if type(child) in types and keep(name, child):
                selected.append((name, child, attr, parent))
    yield from selected


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Evaluate ``model`` in eval mode, then restore every submodule's own ``training`` flag.

    Measuring in eval mode keeps measurements out of training state: an SN layer's ``.weight`` in
    training mode runs a power iteration that updates its ``u``, and BatchNorm updates its statistics.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training

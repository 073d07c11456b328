"""The README's promises: its code example runs, and its test command is the one CI runs."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_layer_example_runs():
    section = README.split("## Use the layers in your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    torch.manual_seed(0)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the example asserts its own claim
    model = namespace["model"]
    assert any(type(m).__name__ == "StiefelConv2d" for m in model.modules())


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in ci.splitlines() if "pytest" in line and not line.lstrip().startswith("#"))
    assert command in README

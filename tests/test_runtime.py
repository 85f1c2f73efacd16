"""Process tuning (the allocator setting the service and the extraction workers apply), and the API image holding it."""

from __future__ import annotations

import platform
import sys

import pytest

from training.runtime import retain_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_allocator_thresholds_are_applied_on_glibc():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent


def test_api_image_holds_every_training_module_the_service_imports():
    """The Dockerfile's API stage copies training modules one by one; a module the service imports but the
    image lacks breaks only the container (as training.runtime once did), so compare the two here."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    api_stage = (root / "Dockerfile").read_text().split("AS api", 1)[1]
    copied = {m for m in re.findall(r"training/(\w+)\.py", api_stage)}

    needed, todo = set(), [*(root / "app").rglob("*.py")]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("training."):
                name = node.module.split(".")[1]
                if name not in needed:
                    needed.add(name)
                    todo.append(root / "training" / f"{name}.py")
    assert needed and needed <= copied, f"missing from the Dockerfile's API stage: {sorted(needed - copied)}"

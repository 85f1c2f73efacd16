"""The package rule, read from the modules' own imports (every ``import`` statement, also those inside
functions): ``speech_emotion`` (the core) imports neither ``app`` nor ``training`` nor any web or Keras
training library; ``app`` imports the core but never ``training``; and the API image copies the core and the
app whole, not chosen files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTTP = {"fastapi", "starlette", "uvicorn", "httpx", "multipart", "python_multipart"}
KERAS = {"keras"}  # the core loads SavedModels with TensorFlow; building and fitting models is training's


def imported(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of ``package`` imports (relative imports resolve to the package)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(package if node.level else (node.module or "").split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("speech_emotion", {"app", "training", "benchmarks", *HTTP, *KERAS}),
    ("app", {"training", "benchmarks"}),
])
def test_the_core_and_the_app_import_nothing_they_must_not(package, forbidden):
    modules = imported(package)
    assert modules, f"no modules under {package}/"
    broken = {path: sorted(names & forbidden) for path, names in modules.items() if names & forbidden}
    assert not broken, f"{package}/ must not import {sorted(forbidden)}: {broken}"


def test_the_app_and_training_use_the_core():
    for package in ("app", "training"):
        assert any("speech_emotion" in names for names in imported(package).values()), package


def test_the_api_image_copies_the_core_and_the_app_whole():
    api_stage = (ROOT / "Dockerfile").read_text().split(" AS api", 1)[1]
    copies = re.findall(r"^COPY (?!--from)(.+)$", api_stage, flags=re.M)
    sources = {src.rstrip("/") for line in copies for src in line.split()[:-1]}
    assert {"speech_emotion", "app"} <= sources, copies
    assert not any(src.startswith("training") for src in sources), copies

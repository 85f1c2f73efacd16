"""One training configuration: defaults here, overridden by a TOML file, overridden by flags."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The bundled corpus, default of every command.
DEFAULT_CORPUS = PROJECT_ROOT / "data" / "emodb"


@dataclass
class TrainConfig:
    # data
    data: str = str(DEFAULT_CORPUS)
    layout: str = "auto"
    speaker_regex: str | None = None
    emotions: list[str] | None = None  # keep only these (canonical names); default all
    # protocol
    protocol: str = "loso"
    test_speakers: list[str] | None = None  # for protocol "speaker"; default a seeded 20 % of speakers
    test_data: str | None = None  # for protocol "cross-corpus"
    test_layout: str = "auto"
    # recipe (defaults: the notebook's)
    features: str = "seed"
    model: str = "seed"
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 512
    patience: int | None = None  # stop after this many epochs without a better validation UAR
    class_weight: bool = False
    augment: bool = False
    seed: int = 0
    # final model on all data, for export
    final_fit: bool = True
    export: str | None = None  # model name: write models/<name>/<next version>/
    models_dir: str = str(PROJECT_ROOT / "models")
    # where things go
    runs_dir: str = "runs"
    cache_dir: str | None = ".cache/features"
    jobs: int | None = None
    progress: bool = True

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        with open(path, "rb") as f:
            data = tomllib.load(f)
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = set(data) - cls.field_names()
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

"""The service's settings: one object, read from ``SER_*`` environment variables, validated at startup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENV_PREFIX = "SER_"


class Settings(BaseModel):
    """Every setting, its environment variable (``SER_`` + the name in capitals) and its default."""

    model_path: Path = Field(
        PROJECT_ROOT / "models",
        description="SavedModel to serve: a version folder (models/emotion/3), a model folder (its newest "
                    "version is served) or a models root holding one model",
    )
    max_upload_mb: float = Field(25.0, gt=0, description="largest request body accepted, in MB (413 above)")
    max_audio_seconds: float = Field(600.0, gt=0, description="longest audio analysed, in seconds (413 above)")
    host: str = Field("0.0.0.0", description="interface uvicorn binds to")
    port: int = Field(8000, ge=1, le=65535, description="port uvicorn listens on")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each loads the model once)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")
    inference_threads: int | None = Field(
        None, ge=1,
        description="threads per worker that decode audio, compute features and call the model, off the event "
                    "loop (default: the CPUs divided among the workers, at least 1)",
    )
    max_batch: int = Field(32, ge=1, description="most requests answered by one model call under load")

    @property
    def threads_per_worker(self) -> int:
        """``inference_threads``, or the CPUs shared out among the workers: one process per core serves more
        than threads of one process, which wait on each other's GIL (benchmarks/README.md)."""
        return self.inference_threads or max(1, _cpus() // self.workers)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {name: environ[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if ENV_PREFIX + name.upper() in environ}
        if "log_level" in values:
            values["log_level"] = values["log_level"].lower()
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                                 for e in exc.errors())
            raise ValueError(f"invalid settings: {problems}") from None

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, description) rows, for the README and ``python -m app --help``."""
        rows = []
        for name, field in cls.model_fields.items():
            default = field.default
            if isinstance(default, Path):
                default = os.path.relpath(default, PROJECT_ROOT)
            if name == "inference_threads":
                default = "CPUs / workers"
            rows.append((ENV_PREFIX + name.upper(), str(default), field.description or ""))
        return rows


def _cpus() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

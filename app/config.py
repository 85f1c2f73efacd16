"""The service's settings: one object, read from ``SER_*`` environment variables, validated at startup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from speech_emotion import PROJECT_ROOT


ENV_PREFIX = "SER_"


class Settings(BaseModel):
    """Every setting, its environment variable (``SER_`` + the name in capitals) and its default."""

    model_path: Path = Field(
        PROJECT_ROOT / "models",
        description="SavedModel to serve: a version folder (models/emotion/12), a model folder (its newest "
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
    max_queue: int = Field(
        64, ge=1,
        description="most /predict and /profile requests one worker holds at once (receiving, waiting or being "
                    "processed); more are answered at once with 503 `overloaded` and Retry-After",
    )
    request_timeout_s: float = Field(
        30.0, gt=0,
        description="longest a request's processing may take once its upload has arrived (503 `timeout` with "
                    "Retry-After beyond it)",
    )
    graceful_timeout_s: float = Field(
        30.0, ge=0,
        description="on SIGTERM, how long in-flight requests may take to finish before they are cancelled",
    )
    keep_alive_s: float = Field(
        5.0, gt=0,
        description="how long an idle keep-alive connection stays open; behind a load balancer or a client "
                    "pool, set it above their idle timeout, or a request sent as the service closes the "
                    "connection is lost",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`, or `json`: one JSON object per line (access lines, the service's and uvicorn's own)",
    )
    api_keys: str = Field(
        "", repr=False,
        description="comma-separated API keys; when any is set (here or in SER_API_KEYS_FILE) every path but "
                    "SER_AUTH_OPEN_PATHS needs one (`Authorization: Bearer <key>` or `X-API-Key: <key>`)",
    )
    api_keys_file: Path | None = Field(
        None, description="file holding API keys, one per line (a mounted secret; blank lines and # comments "
                          "skipped); added to SER_API_KEYS",
    )
    auth_open_paths: str = Field(
        "/,/page/*,/health,/health/live,/health/ready,/metrics,/docs,/docs/oauth2-redirect,/redoc,/openapi.json",
        description="comma-separated paths answered without a key when keys are set (a trailing * matches a "
                    "prefix); the page (GET /, /page/*) and the docs stay open so that a key can be typed "
                    "into the page's key field or Swagger's Authorize",
    )
    cors_origins: str = Field(
        "", description="comma-separated origins allowed to call the API from a browser (`*` for any); "
                        "empty: no CORS headers (same-origin only)",
    )

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_holds_keys(cls, path: Path | None) -> Path | None:
        # An empty or missing secret must not quietly leave the service open.
        if path is not None and (not path.is_file() or not _key_lines(path)):
            raise ValueError(f"{path} is not a file holding at least one key")
        return path

    def keys(self) -> list[str]:
        """The accepted API keys (none: access control is off)."""
        keys = [k.strip() for k in self.api_keys.split(",")]
        if self.api_keys_file is not None:
            keys += _key_lines(self.api_keys_file)
        return [k for k in keys if k]

    @property
    def open_paths(self) -> list[str]:
        return [p.strip() for p in self.auth_open_paths.split(",") if p.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

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
            if default in ("", None):
                default = "(none)"
            rows.append((ENV_PREFIX + name.upper(), str(default), field.description or ""))
        return rows


def _key_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _cpus() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

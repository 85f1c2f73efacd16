"""``python -m app``: run the service with uvicorn, configured from SER_* environment variables."""

from __future__ import annotations

import sys

from app.config import Settings
from app.server import serve


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__, "\nSettings (environment variables):\n")
        for variable, default, description in Settings.documentation():
            print(f"  {variable:24} default {default}\n      {description}")
        return 0
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve("app.main:app", host=settings.host, port=settings.port, workers=settings.workers,
          log_level=settings.log_level, log_format=settings.log_format,
          graceful_timeout=settings.graceful_timeout_s, keep_alive=settings.keep_alive_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

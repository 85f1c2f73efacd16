"""FastAPI microservice: loads the exported SavedModel at startup and answers POST /predict."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("speech-emotion-service")
except PackageNotFoundError:  # running from a source tree that was not pip-installed (e.g. the image)
    __version__ = "0.1.0"

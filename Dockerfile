# Speech emotion recognition service.
#   docker build -t speech-emotion .            # the API image (default target)
#   docker build --target train -t speech-emotion-train .
# The dependency list comes from pyproject.toml, the exact versions from constraints.txt.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin ser
COPY pyproject.toml constraints.txt ./
# Only the service's run-time dependencies ([project].dependencies); soundfile's wheel bundles libsndfile.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt


# Training image for `docker compose run train`: adds the training extras, the module and the bundled corpus.
FROM base AS train
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" > requirements-train.txt \
 && pip install -c constraints.txt -r requirements-train.txt
COPY training/ training/
COPY data/ data/
# Any uid may write these: compose runs training as the host user (see docker-compose.yml).
RUN mkdir -p models runs .cache && chmod 1777 models runs .cache
USER ser
ENV MPLCONFIGDIR=/tmp/matplotlib
ENTRYPOINT ["python", "-m", "training"]
CMD ["train", "--export", "emotion"]


# The API: the app, the modules a model's predictions depend on (decoding, features, export format),
# and the default model.
FROM base AS api
COPY training/__init__.py training/audio.py training/features.py training/export.py training/
COPY app/ app/
COPY models/ models/
USER ser
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SER_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "app"]

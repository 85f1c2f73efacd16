# Speech emotion recognition service.
#   docker build -t speech-emotion .            # the API image (default target)
#   docker build --target train -t speech-emotion-train .
# The dependency list comes from pyproject.toml, the exact versions from constraints.txt.

# The dependency lists, extracted from pyproject.toml in a stage of their own: the big install layers below
# are keyed on these files' contents only, so editing pyproject.toml's other sections (version, pytest
# settings, ...) does not reinstall TensorFlow.
FROM python:3.11-slim AS requirements
WORKDIR /requirements
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('requirements.txt', 'w').write('\n'.join(p['dependencies']) + '\n'); \
open('requirements-train.txt', 'w').write('\n'.join(p['optional-dependencies']['train']) + '\n')"


# What the API and the training image share: Python, the service's run-time dependencies
# ([project].dependencies, pinned by constraints.txt; soundfile's wheel bundles libsndfile) and the user.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
RUN groupadd --gid 10001 ser \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin ser
COPY --from=requirements /requirements/constraints.txt /requirements/requirements.txt /opt/requirements/
# TensorFlow's C++ headers (tensorflow/include, ~430 MB) are only for compiling custom ops: not kept.
RUN pip install -c /opt/requirements/constraints.txt -r /opt/requirements/requirements.txt \
 && rm -rf "$(python -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('tensorflow').origin))")/include"


# Training image for `docker compose run train`: adds the training extras, the module and the bundled corpus.
FROM base AS train
COPY --from=requirements /requirements/requirements-train.txt /opt/requirements/
RUN pip install -c /opt/requirements/constraints.txt -r /opt/requirements/requirements-train.txt
COPY speech_emotion/ speech_emotion/
COPY training/ training/
COPY data/ data/
# Any uid may write these: compose runs training as the host user (see docker-compose.yml).
RUN mkdir -p models runs .cache && chmod 1777 models runs .cache
USER 10001:10001
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
ENTRYPOINT ["python", "-m", "training"]
CMD ["train", "--export", "emotion"]


# The API: the core a model's answers depend on (speech_emotion: decoding, speech detection, features, the model
# format), the app, and the default model. Nothing of training/ (tests/test_imports.py: app never imports it).
FROM base AS api
COPY speech_emotion/ speech_emotion/
COPY app/ app/
COPY models/ models/
# librosa compiles some of its functions with numba when they are first imported: about 30 s of CPU in every
# worker process of every new container that serves a model whose features use librosa (the notebook's MFCCs;
# the default model's features do not import it). Compiled here once instead, by computing those features
# once, into a cache that every start reads; NUMBA_CPU_NAME=generic keys the cache to any x86-64 CPU rather
# than this build machine's (the compiled functions are not on the request path). Then the service's own
# warm-up of the bundled model. numba uses a cache folder only if it can write to it, so the folder belongs to
# the service's user. (deploy/k8s copies it into a writable volume.)
ENV NUMBA_CACHE_DIR=/app/.numba-cache \
    NUMBA_CPU_NAME=generic
RUN python -c "import numpy as np; from speech_emotion.features import mfcc; mfcc(np.ones(22050, np.float32), 22050, 40)" \
 && python -c "from speech_emotion.model import ExportedModel; from speech_emotion.predict import Analyser; \
Analyser(ExportedModel.load('models')).warm_up()" \
 && mkdir -p /app/.numba-cache && chown -R 10001:10001 /app/.numba-cache
# ser (numeric, so that runtimes can check it is not root without reading /etc/passwd)
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SER_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "app"]

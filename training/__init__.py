"""Offline training module: corpora -> features -> LSTM -> honest evaluation -> SavedModel export.

Kept import-light on purpose: the service imports ``training.audio``, ``training.features``,
``training.export`` (the parts a model's predictions depend on) and ``training.runtime`` without pulling in
plotting or training code; the API image holds only those (see the Dockerfile).
"""

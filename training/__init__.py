"""Offline training module: corpora -> features -> LSTM -> honest evaluation -> SavedModel export.

Kept import-light on purpose: the service imports ``training.audio``, ``training.features`` and
``training.export`` (the parts a model's predictions depend on) without pulling in plotting or training code.
"""

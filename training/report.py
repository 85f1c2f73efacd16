"""The run folder: where a training run writes what it did and measured, from the run's result in memory.

    runs/<time>_<corpus>_<protocol>_<model>/
        config.json      the settings (training/config.py TrainConfig)
        manifest.csv     every utterance used, in the order of the features
        skipped.csv      files that could not be read, with the reason
        metrics.json     pooled and per-fold metrics, robustness, cross-corpus (training/train.py)
        history.json     each fold's learning curves; history.png, confusion_matrix.png
        predictions.csv  every test clip's probabilities
        report.md        all of it for a reader
        model.keras      the final model (unless --no-final-fit)
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.corpora import Corpus, Utterance

if TYPE_CHECKING:
    from training.config import TrainConfig


def make_run_dir(runs_dir: str | Path, *parts: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / "_".join([stamp, *[p.replace("/", "-") for p in parts if p]])
    base.parent.mkdir(parents=True, exist_ok=True)
    run_dir, n = base, 1
    while True:  # mkdir claims the name atomically: runs started in the same second get -2, -3, ...
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


def write_manifest(path: Path, utts: list[Utterance]) -> None:
    Corpus("", "", "", utts).write_csv(path)



#: ``predictions.csv``'s columns before the probabilities, one column per label (in the run's label order).
PREDICTION_COLUMNS = ("path", "speaker", "fold", "emotion", "predicted")


def read_predictions(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A run's ``predictions.csv`` (or the run folder holding it): its labels and its rows."""
    path = path / "predictions.csv" if path.is_dir() else path
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return [c for c in reader.fieldnames or [] if c not in PREDICTION_COLUMNS], rows


def write_evaluation(run_dir: Path, metrics: dict, histories: dict, predictions: list, utts: list[Utterance],
                     labels: list[str]) -> None:
    from training import plots

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / "history.json").write_text(json.dumps(histories) + "\n")
    protocol = metrics["protocol"] + (" (speaker-independent)" if metrics["speaker_independent"]
                                      else " (speaker-DEPENDENT)")
    title = f"{metrics['corpus']}, {protocol}, seed {metrics['seed']}"
    p = metrics["pooled"]
    plots.confusion_matrix_png(p["confusion_matrix"], labels, run_dir / "confusion_matrix.png",
                               f"{title}\naccuracy {p['accuracy']:.3f}, UAR {p['uar']:.3f}")
    plots.history_png(histories, run_dir / "history.png", title)
    with (run_dir / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*PREDICTION_COLUMNS, *labels])
        for i, fold, probs in sorted(predictions, key=lambda t: t[0]):
            writer.writerow([utts[i].path, utts[i].speaker, fold, utts[i].emotion, labels[int(np.argmax(probs))],
                             *[f"{p:.5f}" for p in probs]])



def write_report(run_dir: Path, corpus: Corpus, metrics: dict, cfg: TrainConfig, export_dir: Path | None) -> None:
    """``report.md``. Long, but one template read top to bottom: splitting it would only scatter the page."""
    p = metrics["pooled"]
    lines = [
        f"# Training run {run_dir.name}",
        "",
        f"- corpus: **{corpus.name}** ({corpus.layout} layout, `{corpus.root}`), {len(corpus)} files, "
        f"{corpus.hours * 60:.1f} min" + (f"; tested on **{metrics['test_corpus']}**" if metrics["test_corpus"] else ""),
        f"- protocol: **{metrics['protocol']}**, "
        + ("speaker-independent" if metrics["speaker_independent"] else "**speaker-dependent** (optimistic)")
        + f": {metrics['description']}",
        f"- features: `{json.dumps(metrics['features'])}`",
        f"- model: `{cfg.model}` {json.dumps(cfg.model_args) if cfg.model_args else ''}"
        + (" (members fitted apart, each with its own seed and epoch"
           + (" and degraded copies" if cfg.members_own_copies else "")
           + (" and validation speakers" if cfg.members_validate_apart else "") + ")" if cfg.members_apart else "")
        + f"; epochs {cfg.epochs}, "
        f"batch {cfg.batch_size}, patience {cfg.patience}, class weights {cfg.class_weight}, "
        f"augmentation {cfg.augment}, seed {cfg.seed}",
        "- each fold: the epoch chosen on its validation data"
        + ("; the model evaluated is then fitted anew on training + validation utterances for that many epochs"
           if cfg.refit else "; that model is evaluated"),
        "",
        "## Results (test predictions pooled over folds)",
        "",
        "| accuracy | UAR | macro precision | macro recall | macro F1 | n |",
        "|---|---|---|---|---|---|",
        f"| {p['accuracy']:.3f} | {p['uar']:.3f} | {p['macro_precision']:.3f} | {p['macro_recall']:.3f} "
        f"| {p['macro_f1']:.3f} | {p['n']} |",
        "",
        f"Mean UAR over folds {metrics['fold_uar_mean']:.3f} (std {metrics['fold_uar_std']:.3f}).",
        *([] if "with_profile" not in metrics else [
            "",
            "With speaker profiles (" + metrics["with_profile"]["description"] + "): accuracy "
            f"{metrics['with_profile']['pooled']['accuracy']:.3f}, UAR {metrics['with_profile']['pooled']['uar']:.3f}, "
            f"macro F1 {metrics['with_profile']['pooled']['macro_f1']:.3f}.",
        ]),
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[f"| {k} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
          for k, v in p["per_class"].items()],
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Folds",
        "",
        "| fold | train | validation | test | best epoch | accuracy | UAR |",
        "|---|---|---|---|---|---|---|",
        *[f"| {f['name']} | {f['train']} | {f['val']} ({f['validation']}) | {f['test']} | {f['best_epoch']} "
          f"| {f['metrics']['accuracy']:.3f} | {f['metrics']['uar']:.3f} |" for f in metrics["folds"]],
        "",
        "![training history](history.png)",
        "",
        f"Feature extraction: {metrics['timing']['feature_seconds']} s ({metrics['timing']['features_computed']} "
        f"computed, {metrics['timing']['features_cached']} from cache); training: "
        f"{metrics['timing']['train_seconds']} s.",
    ]
    if "final_fit" in metrics:
        ff = metrics["final_fit"]
        lines += ["", f"Final model: all {ff['utterances']} utterances, {ff['epochs']} epochs "
                      f"({ff['epochs_rule']}), saved as `model.keras`."]
    if "robustness" in metrics:
        rb = metrics["robustness"]["conditions"]
        lines += ["", "## Robustness (the same test clips under fixed degradations, each alone)", "",
                  "| condition | UAR | below clean | most frequent answer | no speech left |", "|---|---|---|---|---|",
                  f"| clean | {p['uar']:.3f} | | | |",
                  *[f"| {k} | {v['uar']:.3f} | {v['uar_drop']:+.3f} | {100 * v['top_answer_share']:.0f} % "
                    f"| {v['no_speech']} |" for k, v in rb.items()]]
    for c in metrics.get("cross_corpus") or []:
        m = c["metrics"]
        lines += ["", f"Cross-corpus: {c['description']}: accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f} over "
                      f"{m['n']} clips ({', '.join(c['emotions'])})."]
    if export_dir:
        lines += [f"Exported to `{export_dir}`."]
    if metrics["skipped"]:
        lines += ["", "## Skipped files", "", *[f"- `{s['path']}`: {s['reason']}" for s in metrics["skipped"]]]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")

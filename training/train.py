"""Train and evaluate under a protocol, write a run folder, fit the final model, optionally export it.

    corpus -> manifest -> features (cached) -> protocol folds -> per fold: fit on train, pick the epoch on
    validation (training speakers only), predict test -> pooled metrics and plots -> final fit on all data
    for the median chosen epoch count -> run folder (+ export to models/<name>/<version>/)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.config import TrainConfig
from training.copies import CopySampler, DegradedCopies, Waveforms, condition_inputs
from training.corpora import (
    Corpus,
    Utterance,
    corpus_balance_weights,
    corpus_sources,
    load_corpora,
    load_corpus,
    redistributable,
)
from training.corpora.manifest import Skipped
from training.degrade import CONDITIONS, DegradeSettings
from training.evaluate import classification_metrics, uar
from training.extraction import FeatureCache, extract_features
from speech_emotion.features import FEATURE_SETS, FeatureSet, pad_batch
from training.protocols import (
    PROTOCOLS,
    Fold,
    Plan,
    ProtocolError,
    cross_corpus,
    leave_one_speaker_out,
    random_split,
    speaker_split,
)
from training.speaker import ReferenceSampler, finish_each, with_speaker_profiles

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- data


def _batches_by_length(n: int, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    return [order[i: i + batch_size] for i in range(0, n, batch_size)]


def predict_proba(model, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Class probabilities for every item, batching items of similar length together (less padding).

    ``predict_on_batch`` runs Keras's compiled predict function: a validation set called every epoch is
    traced once per batch shape, then each call costs a sixth of an eager ``model(x)`` (EMO-DB, 58 clips:
    31 against 182 ms).
    """
    if not features:
        return np.zeros((0, model.outputs[0].shape[-1]), dtype=np.float32)
    lengths = np.array([f.shape[0] for f in features])
    probs = np.zeros((len(features), model.outputs[0].shape[-1]), dtype=np.float32)
    for idx in _batches_by_length(len(features), lengths, batch_size):
        probs[idx] = np.asarray(model.predict_on_batch(pad_batch([features[i] for i in idx])))
    return probs


def _make_batches(features, onehot, weights, batch_size, seed, augment, sample=None):
    """Training batches as a tf.data pipeline: reshuffled every epoch, items of similar length share a batch
    (sorted by length inside windows of 8 batches: little padding, still random batch composition), optional
    augmentation per item. ``sample(j, rng)``, when given, makes item ``j``'s input anew each epoch (a speaker
    reference drawn per item: :class:`training.speaker.ReferenceSampler`) before augmentation.

    The signature is declared with a free time axis: letting Keras infer it from the first batches (as it
    does for a PyDataset) fixes the time axis whenever those happen to have the same padded length.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    lengths = np.array([f.shape[0] for f in features])
    onehot = np.asarray(onehot, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)

    def epoch():
        order = rng.permutation(len(features))
        window = batch_size * 8
        chunks = [order[i: i + window] for i in range(0, len(order), window)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        for idx in batches:
            items = [sample(j, rng) if sample else features[j] for j in idx]
            items = [augment(x, rng) for x in items] if augment else items
            yield pad_batch(items).astype(np.float32), onehot[idx], weights[idx]

    signature = (tf.TensorSpec((None, None, features[0].shape[1]), tf.float32),
                 tf.TensorSpec((None, onehot.shape[1]), tf.float32),
                 tf.TensorSpec((None,), tf.float32))
    n_batches = -(-len(features) // batch_size)
    # prefetch: the next batches are drawn, augmented and padded while the model trains on this one
    return (tf.data.Dataset.from_generator(epoch, output_signature=signature)
            .apply(tf.data.experimental.assert_cardinality(n_batches))
            .prefetch(2))


# ------------------------------------------------------------------------------------------ fitting


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    best_epoch: int  # 1-based; the epoch whose weights the model holds
    seconds: float


#: Epochs averaged when judging the validation loss: one validation speaker is a noisy judge, and on
#: EMO-DB leave-one-speaker-out the smoothed loss chose better epochs than the raw loss or the
#: validation UAR did (mean fold UAR 0.694 against 0.676 and 0.653, measured on one run's curves).
SMOOTHING_EPOCHS = 5


def _average(weight_sets: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.mean(np.stack(ws), axis=0).astype(ws[0].dtype) for ws in zip(*weight_sets)]


def _best_epoch_callback(val_features, val_y, patience, average_weights=False):
    import keras

    class BestEpoch(keras.callbacks.Callback):
        """Keep the weights of the epoch with the lowest validation loss averaged over the last
        SMOOTHING_EPOCHS epochs (with ``average_weights``: the mean of those epochs' weights, as stochastic
        weight averaging does); stop after ``patience`` epochs without a new best."""

        def __init__(self):
            super().__init__()
            self.best = math.inf
            self.best_epoch = 0
            self.best_weights = None
            self.recent: list[list[np.ndarray]] = []
            self.history: dict[str, list[float]] = {}

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = predict_proba(self.model, val_features)
            pred = probs.argmax(axis=1)
            val = {
                "val_loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(val_y)), val_y], 1e-7, 1.0)))),
                "val_accuracy": float(np.mean(pred == val_y)),
                "val_uar": uar(val_y, pred),
            }
            logs.update(val)
            for key, value in logs.items():
                self.history.setdefault(key, []).append(float(value))
            smoothed = float(np.mean(self.history["val_loss"][-SMOOTHING_EPOCHS:]))
            self.history.setdefault("val_loss_smoothed", []).append(smoothed)
            if average_weights:
                self.recent = [*self.recent[-(SMOOTHING_EPOCHS - 1):], self.model.get_weights()]
            if smoothed < self.best:
                self.best, self.best_epoch = smoothed, epoch + 1
                self.best_weights = _average(self.recent) if average_weights else self.model.get_weights()
            elif patience is not None and epoch + 1 - self.best_epoch >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestEpoch()


def _last_epochs_callback(n: int):
    """Keeps the weights of the last ``n`` epochs (for averaging when there is no validation set)."""
    import keras

    class LastEpochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.recent: list[list[np.ndarray]] = []

        def on_epoch_end(self, epoch, logs=None):
            self.recent = [*self.recent[-(n - 1):], self.model.get_weights()]

    return LastEpochs()


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """'balanced' weights: n / (classes * count), so every class carries the same total weight."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def fit_model(
    build: Callable[[], Any],
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray] | None,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    patience: int | None = None,
    balance: bool = False,
    item_weights: np.ndarray | None = None,
    augment: Callable | None = None,
    lr_schedule: str = "constant",
    average_weights: bool = False,
    sample: Callable | None = None,
    verbose: int = 0,
) -> FitResult:
    """Fit a fresh model; with ``val``, keep the epoch that scores best on it, else train ``epochs`` epochs.

    ``lr_schedule="cosine"`` decays the optimizer's learning rate along a half cosine over ``epochs``.
    ``average_weights``: the kept model is the mean of the weights of the chosen epoch and the
    SMOOTHING_EPOCHS - 1 before it (without validation: of the last SMOOTHING_EPOCHS epochs).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = build()
    x, y = train
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    if item_weights is not None:  # given per item (e.g. each corpus and each emotion in it weighted alike)
        weights = np.asarray(item_weights, dtype=np.float32)
    else:
        weights = (class_weights(y, n_classes) if balance else np.ones(n_classes))[y].astype(np.float32)
    batches = _make_batches(x, onehot, weights, batch_size, seed, augment, sample)
    best = _best_epoch_callback(val[0], val[1], patience, average_weights) if val is not None else None
    callbacks = [best] if best is not None else []
    last = _last_epochs_callback(SMOOTHING_EPOCHS) if val is None and average_weights else None
    if last is not None:
        callbacks.append(last)
    if lr_schedule == "cosine":
        base = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))))
    elif lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {lr_schedule!r}")
    start = time.perf_counter()
    keras_history = model.fit(batches, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    seconds = time.perf_counter() - start
    if last is not None:
        model.set_weights(_average(last.recent))
    if best is not None:
        history, best_epoch = best.history, best.best_epoch
    else:
        history = {k: [float(v) for v in vs] for k, vs in keras_history.history.items()}
        best_epoch = len(history.get("loss", [])) or epochs
    return FitResult(model, history, best_epoch, seconds)


# ------------------------------------------------------------------------------------------- a run


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    export_dir: Path | None = None
    model: Any = None
    skipped: list[Skipped] = field(default_factory=list)


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


def resolve_features(name: str) -> FeatureSet:
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def resolve_builder(name: str):
    from training.models import MODEL_BUILDERS

    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name]


def _load(cfg: TrainConfig) -> tuple[Corpus, Corpus | None]:
    paths = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    corpus = load_corpora(paths, layouts=[cfg.layout], speaker_regex=cfg.speaker_regex,
                          common_emotions=cfg.common_emotions)
    test_corpus = None
    if cfg.protocol == "cross-corpus":
        if not cfg.test_data:
            raise ProtocolError("protocol cross-corpus needs --test-data (the corpus to test on)")
        test_corpus = load_corpus(cfg.test_data, layout=cfg.test_layout)
    elif cfg.test_data:
        raise ProtocolError("--test-data is only used by --protocol cross-corpus")
    if cfg.emotions:
        wanted = set(cfg.emotions)
        unknown = wanted - set(corpus.emotions)
        if unknown:
            raise ValueError(f"emotion(s) {', '.join(sorted(unknown))} not in {corpus.name} "
                             f"(it has {', '.join(corpus.emotions)})")
        corpus = corpus.subset(lambda u: u.emotion in wanted)
        if test_corpus is not None:
            test_corpus = test_corpus.subset(lambda u: u.emotion in wanted)
    return corpus, test_corpus


def _plan(cfg: TrainConfig, utts: list[Utterance], test_utts: list[Utterance]) -> tuple[Plan, list[Utterance]]:
    if cfg.protocol == "random":
        return random_split(utts, seed=cfg.seed), utts
    if cfg.protocol == "speaker":
        return speaker_split(utts, seed=cfg.seed, test_speakers=cfg.test_speakers), utts
    if cfg.protocol == "loso":
        return leave_one_speaker_out(utts, seed=cfg.seed), utts
    if cfg.protocol == "cross-corpus":
        return cross_corpus(utts, test_utts, seed=cfg.seed)
    raise ProtocolError(f"unknown protocol {cfg.protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def run_training(cfg: TrainConfig) -> RunResult:
    """Everything ``python -m training train`` does; returns where it went and what it measured."""
    if cfg.protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {cfg.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    feature_set = resolve_features(cfg.features)
    builder = resolve_builder(cfg.model)
    augment = None
    if cfg.augment:
        from training.augment import FrameAugment

        augment = FrameAugment.for_features(feature_set, **(cfg.augment_args or {}))
    degrade_settings = DegradeSettings.from_dict(cfg.degrade_args)  # bad settings fail before any work
    corpus, test_corpus = _load(cfg)
    run_dir = make_run_dir(cfg.runs_dir, corpus.name, cfg.protocol, cfg.model)
    log.info("run folder: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    # Features for every file of both corpora; files that fail are skipped, by name, before splitting.
    all_utts = corpus.utterances + (test_corpus.utterances if test_corpus else [])
    extracted = extract_features([u.path for u in all_utts], feature_set, cache=FeatureCache(cfg.cache_dir),
                                 jobs=cfg.jobs, progress=cfg.progress)
    feats_by_path = {u.path: f for u, f in zip(all_utts, extracted.features) if f is not None}
    skipped = corpus.skipped + (test_corpus.skipped if test_corpus else []) + extracted.failed
    audio_hours = sum(u.duration for u in all_utts) / 3600
    log.info("features: %d computed, %d cached, %.1f s (%d failed)", extracted.computed, extracted.cached,
             extracted.seconds, len(extracted.failed))
    train_utts = [u for u in corpus.utterances if u.path in feats_by_path]
    test_only = [u for u in test_corpus.utterances if u.path in feats_by_path] if test_corpus else []

    plan, utts = _plan(cfg, train_utts, test_only)
    labels = sorted({utts[i].emotion for fold in plan.folds for i in fold.train})
    label_id = {label: i for i, label in enumerate(labels)}
    features = [feats_by_path[u.path] for u in utts]
    y = np.array([label_id.get(u.emotion, -1) for u in utts])
    _write_manifest(run_dir / "manifest.csv", utts)
    if skipped:
        Corpus("", "", "", [], skipped).write_skipped(run_dir / "skipped.csv")
    log.info("%s: %d folds; labels %s", plan.description, len(plan.folds), ", ".join(labels))

    input_shape = (None if len({f.shape[0] for f in features}) > 1 else features[0].shape[0], features[0].shape[1])

    def build():
        return builder(input_shape, len(labels), **cfg.model_args)

    speakers = [u.speaker for u in utts]
    waves = Waveforms([u.path for u in utts]) if cfg.degrade_copies or cfg.robustness else None
    copies = (DegradedCopies(waves, speakers, feature_set, cfg.degrade_copies, cfg.seed,
                             settings=degrade_settings)
              if cfg.degrade_copies else None)
    robust_pred: dict[str, list[np.ndarray]] = {name: [] for name in CONDITIONS} if cfg.robustness else {}
    fold_reports, histories, pooled_true, pooled_pred = [], {}, [], []
    profiled_pred = []
    predictions: list[tuple[int, str, np.ndarray]] = []
    train_seconds = 0.0
    context = FoldContext(cfg, build, features, speakers, feature_set, y, labels, augment, copies, utts, waves)
    for fold, outcome in zip(plan.folds, _fold_outcomes(context, plan.folds)):
        train_seconds += outcome.report["train_seconds"]
        if outcome.profiled_pred is not None:
            profiled_pred.append(outcome.profiled_pred)
        for name in robust_pred:
            robust_pred[name].append(outcome.robust_pred[name])
        fold_reports.append(outcome.report)
        histories[fold.name] = outcome.history
        pooled_true.append(y[fold.test])
        pooled_pred.append(outcome.test_probs.argmax(axis=1))
        predictions += [(i, fold.name, p) for i, p in zip(fold.test, outcome.test_probs)]

    pooled = classification_metrics(np.concatenate(pooled_true), np.concatenate(pooled_pred), labels)
    fold_uars = [f["metrics"]["uar"] for f in fold_reports]
    metrics = {
        "corpus": corpus.name,
        "corpora": corpus_sources(corpus),
        "test_corpus": test_corpus.name if test_corpus else None,
        "protocol": plan.protocol,
        "speaker_independent": plan.speaker_independent,
        "description": plan.description,
        "seed": cfg.seed,
        "features": feature_set.to_dict(),
        "model": cfg.model,
        "labels": labels,
        "pooled": pooled,
        "fold_uar_mean": float(np.mean(fold_uars)),
        "fold_uar_std": float(np.std(fold_uars)),
        "folds": fold_reports,
        "timing": {
            "feature_seconds": round(extracted.seconds, 2),
            "features_computed": extracted.computed,
            "features_cached": extracted.cached,
            "audio_hours": round(audio_hours, 4),
            "train_seconds": round(train_seconds, 2),
        },
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
    }
    if profiled_pred:
        profile_uars = [f["metrics_with_profile"]["uar"] for f in fold_reports]
        metrics["with_profile"] = {
            "description": "each test speaker's clips finished with a speaker profile (mean log-mel spectrum) "
                           "of all of that speaker's test clips: their audio, never their labels; 'pooled' "
                           "above is each clip alone",
            "pooled": classification_metrics(np.concatenate(pooled_true), np.concatenate(profiled_pred), labels),
            "fold_uar_mean": float(np.mean(profile_uars)),
            "fold_uar_std": float(np.std(profile_uars)),
        }
        log.info("with speaker profiles: accuracy %.3f, UAR %.3f (each clip alone: %.3f, %.3f)",
                 metrics["with_profile"]["pooled"]["accuracy"], metrics["with_profile"]["pooled"]["uar"],
                 pooled["accuracy"], pooled["uar"])
    if robust_pred:
        metrics["robustness"] = _robustness(np.concatenate(pooled_true), robust_pred, labels, pooled)
        for name, m in metrics["robustness"]["conditions"].items():
            log.info("robustness %-12s UAR %.3f (clean %.3f), most frequent answer %.0f%%, no speech %d", name,
                     m["uar"], pooled["uar"], 100 * m["top_answer_share"], m["no_speech"])
    if copies is not None:
        metrics["timing"]["degraded_copies_seconds"] = round(copies.seconds, 2)
    _write_evaluation(run_dir, metrics, histories, predictions, utts, labels)

    run = RunResult(run_dir, metrics, skipped=skipped)
    if cfg.final_fit:
        best_epochs = [f["best_epoch"] for f in fold_reports]
        run.model, final = _final_fit(cfg, plan, build, features, speakers, feature_set, y, labels, augment,
                                      best_epochs, copies, utts)
        metrics["final_fit"] = final
        if cfg.eval_data:
            metrics["cross_corpus"] = [_score_corpus(run.model, path, feature_set, labels, cfg, corpus.name)
                                       for path in cfg.eval_data]
        run.model.save(run_dir / "model.keras")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.export:
            run.export_dir = export_run(run_dir, cfg.export, models_dir=cfg.models_dir, model=run.model)
    _write_report(run_dir, corpus, metrics, cfg, run.export_dir)
    return run


@dataclass
class FoldContext:
    """What every fold of a run shares: the settings, the data and how to build a model."""

    cfg: TrainConfig
    build: Callable[[], Any]
    features: list[np.ndarray]
    speakers: list[str]
    feature_set: FeatureSet
    y: np.ndarray
    labels: list[str]
    augment: Any = None
    copies: DegradedCopies | None = None
    utts: list[Utterance] | None = None
    waves: Waveforms | None = None


@dataclass
class FoldOutcome:
    """A fold's evaluation, in memory: its report, learning curves and the test clips' answers."""

    report: dict[str, Any]
    history: dict[str, list]
    test_probs: np.ndarray  # each test clip alone, as POST /predict sees it
    profiled_pred: np.ndarray | None  # each test speaker with a profile of their test clips (reference models)
    robust_pred: dict[str, np.ndarray]  # per robustness condition; -1 where no speech was left


def evaluate_fold(ctx: FoldContext, k: int, fold: Fold) -> FoldOutcome:
    """Fit the fold's model (:func:`_run_fold`) and score its test speakers: each clip alone, with speaker
    profiles for models that take them, and under every robustness condition when asked."""
    cfg, features, speakers, feature_set, y = ctx.cfg, ctx.features, ctx.speakers, ctx.feature_set, ctx.y
    result = _run_fold(cfg, fold, k, ctx.build, features, speakers, feature_set, y, len(ctx.labels), ctx.augment,
                       ctx.copies, ctx.utts)
    test_feats = [features[i] for i in fold.test]
    test_probs = predict_proba(result.model, finish_each(test_feats, feature_set))
    metrics = classification_metrics(y[fold.test], test_probs.argmax(axis=1), ctx.labels)
    log.info("fold %s: accuracy %.3f, UAR %.3f (best epoch %d of %d)", fold.name, metrics["accuracy"],
             metrics["uar"], result.best_epoch, len(result.history.get("loss", [])))
    report = {**fold.describe(), "best_epoch": result.best_epoch,
              "epochs_run": len(result.history.get("loss", [])),
              # --refit: the scored model was fitted anew on this many utterances (training + validation)
              "refit_utterances": int(len(fold.train) + len(fold.val)) if cfg.refit and len(fold.val) else None,
              "train_seconds": round(result.seconds, 2), "metrics": metrics}
    profiled = None
    if feature_set.uses_reference:
        # And each test speaker with a profile of all of their test clips (their audio, not their labels).
        profiled = predict_proba(result.model, with_speaker_profiles(
            test_feats, [speakers[i] for i in fold.test], feature_set)).argmax(axis=1)
        report["metrics_with_profile"] = classification_metrics(y[fold.test], profiled, ctx.labels)
        log.info("fold %s with speaker profiles: accuracy %.3f, UAR %.3f", fold.name,
                 report["metrics_with_profile"]["accuracy"], report["metrics_with_profile"]["uar"])
    robust = {}
    for name in CONDITIONS if cfg.robustness else ():  # the same test clips under each degradation, each alone
        inputs = condition_inputs(fold.test, name, ctx.waves, speakers, feature_set)
        heard = [x for x in inputs if x is not None]
        probs = iter(predict_proba(result.model, heard).argmax(axis=1)) if heard else iter(())
        robust[name] = np.array([next(probs) if x is not None else -1 for x in inputs])
    return FoldOutcome(report, {**result.history, "best_epoch": [result.best_epoch]}, test_probs, profiled, robust)


def _fold_outcomes(ctx: FoldContext, folds: list[Fold]) -> list[FoldOutcome]:
    """Every fold's outcome, in order: one after another here, or as Ray tasks with ``cfg.ray_address``
    (the folds are independent; each task fits its fold exactly as here, with the same seeds)."""
    if not ctx.cfg.ray_address:
        return [evaluate_fold(ctx, k, fold) for k, fold in enumerate(folds)]
    from training.cluster import run_folds_on_ray

    return run_folds_on_ray(ctx, folds, evaluate_fold)


def _sampler(features, speakers, feature_set, idx, copies=None, clean: float = 0.5):
    """Training inputs: for features with a speaker reference, drawn per item and epoch; with degraded copies,
    each item drawn as itself or one of its copies; else as they are (None)."""
    base = (ReferenceSampler([features[i] for i in idx], [speakers[i] for i in idx], feature_set)
            if feature_set.uses_reference else None)
    if copies is None:
        return base
    return CopySampler([features[i] for i in idx], copies.for_items(idx), feature_set, base=base, clean=clean)


def _robustness(y_true: np.ndarray, robust_pred: dict[str, list[np.ndarray]], labels: list[str], clean: dict
                ) -> dict:
    """Per fixed degradation: the pooled metrics, how far below clean, how often the most frequent answer was
    given (a condition that collapses onto one label shows here) and how many clips lost all speech."""
    conditions = {}
    for name, preds in robust_pred.items():
        pred = np.concatenate(preds)
        m = classification_metrics(y_true, pred, labels)
        answered = pred[pred >= 0]
        m["top_answer_share"] = float(np.bincount(answered).max() / len(pred)) if len(answered) else 0.0
        m["no_speech"] = int(np.sum(pred < 0))
        m["uar_drop"] = float(clean["uar"] - m["uar"])
        conditions[name] = m
    return {"description": "every test clip also scored alone under fixed, seeded degradations "
                           "(training/degrade.py CONDITIONS); a clip in which no speech is left counts as wrong",
            "conditions": conditions,
            "worst_drop": max(m["uar_drop"] for m in conditions.values())}


def _score_corpus(model, path: str, feature_set: FeatureSet, labels: list[str], cfg: TrainConfig, train_name: str
                  ) -> dict:
    """The final model on another corpus (see :func:`score_corpus`)."""
    return score_corpus(lambda x: predict_proba(model, x), path, feature_set, labels, train_name,
                        cache_dir=cfg.cache_dir, jobs=cfg.jobs, progress=cfg.progress)


def score_corpus(predict: Callable[[list[np.ndarray]], np.ndarray], path: str, feature_set: FeatureSet,
                 labels: list[str], train_name: str, *, cache_dir: str | None = None, jobs: int | None = None,
                 progress: bool = True) -> dict:
    """A model on a labelled corpus: its clips with emotions the model knows, each alone (as /predict hears
    them); UAR over those emotions (answers are the model's whole label set, as the service gives them)."""
    other = load_corpus(path)
    shared = sorted(set(labels) & set(other.emotions))
    if not shared:
        raise ValueError(f"{other.name} has no emotion the model knows ({', '.join(labels)})")
    other = other.subset(lambda u: u.emotion in shared)
    extracted = extract_features([u.path for u in other.utterances], feature_set, cache=FeatureCache(cache_dir),
                                 jobs=jobs, progress=progress)
    kept = [(u, f) for u, f in zip(other.utterances, extracted.features) if f is not None]
    y_true = np.array([labels.index(u.emotion) for u, _ in kept])
    pred = predict(finish_each([f for _, f in kept], feature_set)).argmax(axis=1)
    m = classification_metrics(y_true, pred, labels)
    log.info("scored on %s (%d clips, emotions %s): accuracy %.3f, UAR %.3f", other.name, len(kept),
             ", ".join(shared), m["accuracy"], m["uar"])
    return {"corpus": other.name, "path": _portable(path), "trained_on": train_name, "emotions": shared,
            "skipped": len(other.utterances) - len(kept),
            "description": f"final model trained on {train_name}, scored on {other.name} (each clip alone, over "
                           "the emotions both share; speaker- and corpus-independent)",
            "metrics": m}


def _run_fold(cfg, fold: Fold, k: int, build, features, speakers, feature_set, y, n_classes, augment,
              copies=None, utts=None) -> FitResult:
    """Fit on the fold's training speakers, choosing the epoch on its validation speakers; with ``cfg.refit``
    (and validation speakers), then fit a fresh model on training + validation speakers for the chosen
    number of epochs, as the final model is fitted on all data: that model is evaluated, the test speakers
    stay unseen and the validation speakers' clips are no longer left out of training."""
    val = [features[i] for i in fold.val]
    if feature_set.uses_reference:  # validation speakers with profiles of their validation clips
        val = with_speaker_profiles(val, [speakers[i] for i in fold.val], feature_set)
    chosen = _fit_for(cfg, build, features, speakers, feature_set, y, fold.train, n_classes, augment,
                      epochs=cfg.epochs, seed=cfg.seed * 1000 + k, val=(val, y[fold.val]), patience=cfg.patience,
                      copies=copies, utts=utts)
    if not (cfg.refit and len(fold.val)):
        return chosen
    idx = np.sort(np.concatenate([fold.train, fold.val]))
    refit = _fit_for(cfg, build, features, speakers, feature_set, y, idx, n_classes, augment,
                     epochs=chosen.best_epoch, seed=cfg.seed * 1000 + 500 + k, copies=copies, utts=utts)
    log.info("fold %s: refitted on %d utterances for %d epochs, %.1f s", fold.name, len(idx), chosen.best_epoch,
             refit.seconds)
    return FitResult(refit.model, chosen.history, chosen.best_epoch, chosen.seconds + refit.seconds)


def _fit_for(cfg, build, features, speakers, feature_set, y, idx, n_classes, augment, *, epochs: int,
             seed: int, val=None, patience: int | None = None, copies=None, utts=None) -> FitResult:
    """Fit on the utterances ``idx`` with the run's settings: with ``val``, choosing the epoch on it (a fold's
    model); without, for ``epochs`` chosen elsewhere on validation (a fold's refit, the final model)."""
    item_weights = None
    if cfg.class_weight and utts is not None and len({utts[i].corpus for i in idx}) > 1:
        item_weights = corpus_balance_weights([utts[i] for i in idx], [utts[i].emotion for i in idx])
    return fit_model(
        build, ([features[i] for i in idx], y[idx]), val,
        n_classes=n_classes, epochs=epochs, batch_size=cfg.batch_size, seed=seed, patience=patience,
        balance=cfg.class_weight, item_weights=item_weights, augment=augment, lr_schedule=cfg.lr_schedule,
        average_weights=cfg.average_weights,
        sample=_sampler(features, speakers, feature_set, idx, copies, cfg.degrade_clean),
    )


def _final_fit(cfg, plan: Plan, build, features, speakers, feature_set, y, labels, augment, best_epochs: list[int],
               copies=None, utts=None):
    """Fit on every training-corpus utterance for the median epoch count the folds chose on validation."""
    epochs = max(1, int(statistics.median(best_epochs)))
    if plan.protocol == "cross-corpus":  # the test corpus stays unseen
        train_idx = np.sort(np.concatenate([plan.folds[0].train, plan.folds[0].val]))
    else:
        train_idx = np.arange(len(features))
    result = _fit_for(cfg, build, features, speakers, feature_set, y, train_idx, len(labels), augment,
                      epochs=epochs, seed=cfg.seed * 1000 + 999, copies=copies, utts=utts)
    log.info("final model: %d utterances, %d epochs (median best epoch over folds), %.1f s",
             len(train_idx), epochs, result.seconds)
    return result.model, {
        "utterances": int(len(train_idx)),
        "epochs": epochs,
        "epochs_rule": "median of the best validation epochs over the protocol's folds",
        "train_seconds": round(result.seconds, 2),
    }


def _write_manifest(path: Path, utts: list[Utterance]) -> None:
    Corpus("", "", "", utts).write_csv(path)


def _write_evaluation(run_dir: Path, metrics, histories, predictions, utts, labels) -> None:
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
        writer.writerow(["path", "speaker", "fold", "emotion", "predicted", *labels])
        for i, fold, probs in sorted(predictions, key=lambda t: t[0]):
            writer.writerow([utts[i].path, utts[i].speaker, fold, utts[i].emotion, labels[int(np.argmax(probs))],
                             *[f"{p:.5f}" for p in probs]])


def export_run(run_dir: str | Path, name: str, *, models_dir: str | Path, model=None,
               version: int | None = None) -> Path:
    """Export a run's final model (``model.keras``) with metadata built from the run's files."""
    from training.export import export_model

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    if model is None:
        import keras

        if not (run_dir / "model.keras").is_file():
            raise FileNotFoundError(f"{run_dir} has no model.keras (was it trained with --no-final-fit?)")
        model = keras.models.load_model(run_dir / "model.keras")
    for key in ("data", "test_data", "models_dir", "runs_dir", "cache_dir"):
        config[key] = _portable(config.get(key))
    manifest = list(csv.DictReader((run_dir / "manifest.csv").open()))
    sources = metrics.get("corpora") or [{"name": metrics["corpus"]}]
    train_corpus = [r for r in manifest if r["corpus"] in {c["name"] for c in sources}]
    pooled = metrics["pooled"]
    from speech_emotion.model import serving_defaults
    from speech_emotion.features import settings_from_dict

    metadata = {
        "labels": metrics["labels"],
        "serving": serving_defaults(settings_from_dict(metrics["features"]),
                                    [float(r["duration"]) for r in train_corpus]),
        "features": metrics["features"],
        "model": {"builder": metrics["model"], "args": config.get("model_args", {}),
                  "parameters": int(model.count_params())},
        "training": {
            "corpus": metrics["corpus"],
            # every corpus the model learnt from, with its licence: what may be done with the model follows
            "corpora": [{**c, "path": _portable(c.get("path"))} for c in metrics.get("corpora", [])],
            "redistributable": all(redistributable(c.get("licence", "unknown")) for c in sources),
            "utterances": len(train_corpus),
            "speakers": sorted({r["speaker"] for r in train_corpus}),
            "emotions": dict(sorted(Counter(r["emotion"] for r in train_corpus).items())),
            "final_fit": metrics.get("final_fit"),
            "seed": metrics["seed"],
            "config": config,
            "run": run_dir.name,
        },
        "evaluation": {
            "protocol": metrics["protocol"],
            "speaker_independent": metrics["speaker_independent"],
            "description": metrics["description"],
            "test_corpus": metrics.get("test_corpus") or metrics["corpus"],
            "metrics": {k: pooled[k] for k in ("n", "accuracy", "uar", "macro_precision", "macro_recall",
                                               "macro_f1")},
            "per_class_recall": {k: v["recall"] for k, v in pooled["per_class"].items()},
            "fold_uar_mean": metrics["fold_uar_mean"],
            "fold_uar_std": metrics["fold_uar_std"],
            "folds": len(metrics["folds"]),
        },
    }
    if "with_profile" in metrics:  # the same folds, each test speaker with a profile of their test clips
        wp = metrics["with_profile"]
        metadata["evaluation"]["with_profile"] = {
            "description": wp["description"],
            "metrics": {k: wp["pooled"][k] for k in ("n", "accuracy", "uar", "macro_precision", "macro_recall",
                                                     "macro_f1")},
            "per_class_recall": {k: v["recall"] for k, v in wp["pooled"]["per_class"].items()},
            "fold_uar_mean": wp["fold_uar_mean"],
            "fold_uar_std": wp["fold_uar_std"],
        }
    if "robustness" in metrics:  # the same folds' test clips under fixed degradations, each alone
        rb = metrics["robustness"]
        metadata["evaluation"]["robustness"] = {
            "description": rb["description"],
            "clean_uar": pooled["uar"],
            "conditions": {k: {"uar": v["uar"], "accuracy": v["accuracy"], "uar_drop": v["uar_drop"],
                               "top_answer_share": v["top_answer_share"], "no_speech": v["no_speech"]}
                           for k, v in rb["conditions"].items()},
            "worst_drop": rb["worst_drop"],
        }
    if metrics.get("cross_corpus"):  # the final model on other corpora
        metadata["evaluation"]["cross_corpus"] = [
            {"corpus": c["corpus"], "emotions": c["emotions"], "description": c["description"],
             "metrics": {k: c["metrics"][k] for k in ("n", "accuracy", "uar", "macro_f1")},
             "per_class_recall": {k: c["metrics"]["per_class"][k]["recall"] for k in c["emotions"]}}
            for c in metrics["cross_corpus"]]
    if not metadata["training"]["redistributable"]:
        log.warning("this model learnt from data whose licence does not allow redistributing it freely (%s): "
                    "keep it to yourself", ", ".join(f"{c['name']}: {c.get('licence', 'unknown')}" for c in sources))
    out = export_model(model, models_dir, name, metadata, version=version)
    log.info("exported %s", out)
    return out


def _portable(path: str | list[str] | None) -> str | list[str] | None:
    """A path inside the project as a relative one, so metadata does not carry one machine's layout."""
    from training.config import PROJECT_ROOT

    if isinstance(path, list):
        return [_portable(p) for p in path]

    if path and Path(path).resolve().is_relative_to(PROJECT_ROOT):
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    return path


def _write_report(run_dir: Path, corpus: Corpus, metrics: dict, cfg: TrainConfig, export_dir: Path | None) -> None:
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
        f"- model: `{cfg.model}` {json.dumps(cfg.model_args) if cfg.model_args else ''}; epochs {cfg.epochs}, "
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


"""Train and evaluate under a protocol, fit the final model, optionally export it: ``python -m training train``.

    corpus -> manifest -> features (cached) -> protocol folds -> per fold: fit on train, pick the epoch on
    validation (training speakers only), predict test -> pooled metrics -> final fit on all data for the
    median chosen epoch count -> :class:`RunResult` in memory -> run folder (training/report.py) and export
    (training/export.py), both written from it

Fitting one network is :mod:`training.fitting`; the protocols' folds are :mod:`training.protocols`.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from speech_emotion.features import FEATURE_SETS, FeatureSet
from training.config import TrainConfig, current_name, portable_path
from training.copies import CopySampler, DegradedCopies, Waveforms, condition_inputs
from training.corpora import Corpus, Utterance, corpus_balance_weights, corpus_sources, load_corpora, load_corpus
from training.corpora.manifest import Skipped
from training.degrade import CONDITIONS, DegradeSettings
from training.evaluate import classification_metrics
from training.extraction import FeatureCache, extract_features
from training.fitting import FitResult, fit_members_apart, fit_model, predict_proba
from training.protocols import (
    PROTOCOLS,
    Fold,
    Plan,
    ProtocolError,
    cross_corpus,
    leave_one_speaker_out,
    member_validation,
    random_split,
    speaker_split,
)
from training.report import make_run_dir, write_evaluation, write_manifest, write_report
from training.speaker import ReferenceSampler, finish_each, with_speaker_profiles

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did and measured, in memory; the run folder and the export are written from it."""

    run_dir: Path
    metrics: dict[str, Any]
    export_dir: Path | None = None
    model: Any = None
    skipped: list[Skipped] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ data

def resolve_features(name: str) -> FeatureSet:
    name = current_name(name, "feature set")
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def resolve_builder(name: str):
    from training.models import MODEL_BUILDERS

    name = current_name(name, "model")
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



@dataclass
class Prepared:
    """A run's data after feature extraction: the utterances the protocol uses, in the order of their features."""

    corpus: Corpus
    test_corpus: Corpus | None
    plan: Plan
    utts: list[Utterance]
    features: list[np.ndarray]
    y: np.ndarray  # label index per utterance; -1 for a test-corpus emotion the model does not learn
    labels: list[str]
    skipped: list[Skipped]
    timing: dict[str, Any]


def prepare(cfg: TrainConfig, feature_set: FeatureSet) -> Prepared:
    """Load the corpora, extract (or read cached) features and split under the protocol. Files that fail are
    skipped, by name, before splitting."""
    corpus, test_corpus = _load(cfg)
    all_utts = corpus.utterances + (test_corpus.utterances if test_corpus else [])
    extracted = extract_features([u.path for u in all_utts], feature_set, cache=FeatureCache(cfg.cache_dir),
                                 jobs=cfg.jobs, progress=cfg.progress, ray_address=cfg.ray_address)
    feats_by_path = {u.path: f for u, f in zip(all_utts, extracted.features) if f is not None}
    log.info("features: %d computed, %d cached, %.1f s (%d failed)", extracted.computed, extracted.cached,
             extracted.seconds, len(extracted.failed))
    train_utts = [u for u in corpus.utterances if u.path in feats_by_path]
    test_only = [u for u in test_corpus.utterances if u.path in feats_by_path] if test_corpus else []
    plan, utts = _plan(cfg, train_utts, test_only)
    labels = sorted({utts[i].emotion for fold in plan.folds for i in fold.train})
    label_id = {label: i for i, label in enumerate(labels)}
    return Prepared(
        corpus, test_corpus, plan, utts,
        features=[feats_by_path[u.path] for u in utts],
        y=np.array([label_id.get(u.emotion, -1) for u in utts]),
        labels=labels,
        skipped=corpus.skipped + (test_corpus.skipped if test_corpus else []) + extracted.failed,
        timing={"feature_seconds": round(extracted.seconds, 2), "features_computed": extracted.computed,
                "features_cached": extracted.cached,
                "audio_hours": round(sum(u.duration for u in all_utts) / 3600, 4)})


# ------------------------------------------------------------------------------------------- a run


def run_training(cfg: TrainConfig) -> RunResult:
    """Everything ``python -m training train`` does; returns where it went and what it measured. With
    ``cfg.ray_address``, feature extraction and the folds run as tasks on one Ray connection."""
    if not cfg.ray_address:
        return _run(cfg)
    from speech_emotion.score import ray_init

    started = ray_init(cfg.ray_address)
    try:
        return _run(cfg)
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(cfg: TrainConfig) -> RunResult:
    if cfg.protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {cfg.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    feature_set = resolve_features(cfg.features)
    builder = resolve_builder(cfg.model)
    if cfg.members_apart and current_name(cfg.model, "model") != "crnn_ensemble":
        raise ValueError(f"members_apart fits the members of an ensemble apart: it needs --model crnn_ensemble, "
                         f"not {cfg.model!r}")
    if cfg.members_own_copies and not cfg.members_apart:
        raise ValueError("members_own_copies gives each member fitted apart degraded copies of its own: it needs "
                         "members_apart")
    if cfg.members_validate_apart and not cfg.members_apart:
        raise ValueError("members_validate_apart gives each member fitted apart validation speakers of its own: "
                         "it needs members_apart")
    if cfg.final_all_speakers and not cfg.members_validate_apart:
        raise ValueError("final_all_speakers trains the final model's members on every speaker where "
                         "members_validate_apart would hold some out: it needs members_validate_apart")
    if cfg.consistency and not cfg.degrade_copies:
        raise ValueError("consistency compares each item's answer with its answer through a degraded copy: it "
                         "needs degrade_copies")
    if cfg.consistency < 0:
        raise ValueError(f"consistency is a weight of the loss: 0 or more, not {cfg.consistency}")
    if cfg.members_validate_apart and cfg.refit:
        raise ValueError("members_validate_apart chooses each member's epoch on its own validation speakers: "
                         "there is no one epoch count to refit with (drop refit)")
    augment = None
    if cfg.augment:
        from training.augment import FrameAugment

        augment = FrameAugment.for_features(feature_set, **(cfg.augment_args or {}))
    degrade_settings = DegradeSettings.from_dict(cfg.degrade_args)  # bad settings fail before any work
    data = prepare(cfg, feature_set)
    run_dir = make_run_dir(cfg.runs_dir, data.corpus.name, cfg.protocol, cfg.model)
    log.info("run folder: %s", run_dir)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_manifest(run_dir / "manifest.csv", data.utts)
    if data.skipped:
        Corpus("", "", "", [], data.skipped).write_skipped(run_dir / "skipped.csv")
    log.info("%s: %d folds; labels %s", data.plan.description, len(data.plan.folds), ", ".join(data.labels))

    features = data.features
    input_shape = (None if len({f.shape[0] for f in features}) > 1 else features[0].shape[0], features[0].shape[1])
    n_labels = len(data.labels)

    def build():
        return builder(input_shape, n_labels, **cfg.model_args)

    def build_member():  # a one-member ensemble, fitted apart (cfg.members_apart)
        return builder(input_shape, n_labels, **{**cfg.model_args, "members": 1})

    speakers = [u.speaker for u in data.utts]
    waves = Waveforms([u.path for u in data.utts]) if cfg.degrade_copies or cfg.robustness else None
    copies = (DegradedCopies(waves, speakers, feature_set, cfg.degrade_copies, cfg.seed, settings=degrade_settings)
              if cfg.degrade_copies else None)
    ctx = FoldContext(cfg, build, features, speakers, feature_set, data.y, data.labels, augment, copies, data.utts,
                      waves, build_member if cfg.members_apart else None)
    outcomes = _fold_outcomes(ctx, data.plan.folds)
    metrics = _metrics(cfg, data, feature_set, outcomes)
    if copies is not None:
        metrics["timing"]["degraded_copies_seconds"] = round(copies.seconds, 2)
    predictions = [(i, fold.name, p) for fold, o in zip(data.plan.folds, outcomes)
                   for i, p in zip(fold.test, o.test_probs)]
    write_evaluation(run_dir, metrics, {fold.name: o.history for fold, o in zip(data.plan.folds, outcomes)},
                     predictions, data.utts, data.labels)

    run = RunResult(run_dir, metrics, skipped=data.skipped)
    if cfg.final_fit:
        run.model, metrics["final_fit"] = _final_fit(ctx, data.plan, [f["best_epoch"] for f in metrics["folds"]])
        if cfg.eval_data:
            metrics["cross_corpus"] = [_score_corpus(run.model, path, feature_set, data.labels, cfg, data.corpus.name)
                                       for path in cfg.eval_data]
        run.model.save(run_dir / "model.keras")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.export:
            from training.export import export_trained

            run.export_dir = export_trained(run.model, metrics, cfg.to_dict(), [asdict(u) for u in data.utts],
                                            run_dir.name, cfg.export, models_dir=cfg.models_dir)
    write_report(run_dir, data.corpus, metrics, cfg, run.export_dir)
    return run


def _metrics(cfg: TrainConfig, data: Prepared, feature_set: FeatureSet, outcomes: list[FoldOutcome]) -> dict:
    """The run's metrics: every fold's test clips pooled, fold by fold, with profiles and under degradations."""
    labels, folds = data.labels, data.plan.folds
    y_true = np.concatenate([data.y[fold.test] for fold in folds])
    pooled = classification_metrics(y_true, np.concatenate([o.test_probs.argmax(axis=1) for o in outcomes]), labels)
    reports = [o.report for o in outcomes]
    fold_uars = [f["metrics"]["uar"] for f in reports]
    metrics = {
        "corpus": data.corpus.name,
        "corpora": corpus_sources(data.corpus),
        "test_corpus": data.test_corpus.name if data.test_corpus else None,
        "protocol": data.plan.protocol,
        "speaker_independent": data.plan.speaker_independent,
        "description": data.plan.description,
        "seed": cfg.seed,
        "features": feature_set.to_dict(),
        "model": cfg.model,
        "labels": labels,
        "pooled": pooled,
        "fold_uar_mean": float(np.mean(fold_uars)),
        "fold_uar_std": float(np.std(fold_uars)),
        "folds": reports,
        "timing": {**data.timing, "train_seconds": round(sum(f["train_seconds"] for f in reports), 2)},
        "skipped": [{"path": s.path, "reason": s.reason} for s in data.skipped],
    }
    if any(o.profiled_pred is not None for o in outcomes):
        profile_uars = [f["metrics_with_profile"]["uar"] for f in reports]
        metrics["with_profile"] = {
            "description": "each test speaker's clips finished with a speaker profile (mean log-mel spectrum) "
                           "of all of that speaker's test clips: their audio, never their labels; 'pooled' "
                           "above is each clip alone",
            "pooled": classification_metrics(y_true, np.concatenate([o.profiled_pred for o in outcomes]), labels),
            "fold_uar_mean": float(np.mean(profile_uars)),
            "fold_uar_std": float(np.std(profile_uars)),
        }
        log.info("with speaker profiles: accuracy %.3f, UAR %.3f (each clip alone: %.3f, %.3f)",
                 metrics["with_profile"]["pooled"]["accuracy"], metrics["with_profile"]["pooled"]["uar"],
                 pooled["accuracy"], pooled["uar"])
    if cfg.robustness:
        robust_pred = {name: [o.robust_pred[name] for o in outcomes] for name in CONDITIONS}
        metrics["robustness"] = _robustness(y_true, robust_pred, labels, pooled)
        for name, m in metrics["robustness"]["conditions"].items():
            log.info("robustness %-12s UAR %.3f (clean %.3f), most frequent answer %.0f%%, no speech %d", name,
                     m["uar"], pooled["uar"], 100 * m["top_answer_share"], m["no_speech"])
    return metrics


# ------------------------------------------------------------------------------------------- folds


@dataclass
class FoldContext:
    """What every fold of a run (and its final fit) shares: the settings, the data and how to build a model."""

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
    #: with ``cfg.members_apart``: builds one member, fitted on its own (training/fitting.py fit_members_apart)
    build_member: Callable[[], Any] | None = None


@dataclass
class FoldOutcome:
    """A fold's evaluation, in memory: its report, learning curves and the test clips' answers."""

    report: dict[str, Any]
    history: dict[str, list]
    test_probs: np.ndarray  # each test clip alone, as POST /predict sees it
    profiled_pred: np.ndarray | None  # each test speaker with a profile of their test clips (reference models)
    robust_pred: dict[str, np.ndarray]  # per robustness condition; -1 where no speech was left


def evaluate_fold(ctx: FoldContext, k: int, fold: Fold) -> FoldOutcome:
    """Fit the fold's model (:func:`_fit_fold`) and score its test speakers: each clip alone, with speaker
    profiles for models that take them, and under every robustness condition when asked."""
    cfg, features, speakers, feature_set, y = ctx.cfg, ctx.features, ctx.speakers, ctx.feature_set, ctx.y
    result = _fit_fold(ctx, k, fold)
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
    if "member_validation" in result.history:  # members_validate_apart: the fold's own val split went unused
        report["member_validation"] = result.history["member_validation"]
        report["member_best_epochs"] = result.history["member_best_epochs"]
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


def _fit_fold(ctx: FoldContext, k: int, fold: Fold) -> FitResult:
    """Fit on the fold's training speakers, choosing the epoch on its validation speakers; with ``cfg.refit``
    (and validation speakers), then fit a fresh model on training + validation speakers for the chosen
    number of epochs, as the final model is fitted on all data: that model is evaluated, the test speakers
    stay unseen and the validation speakers' clips are no longer left out of training. With
    ``cfg.members_validate_apart``, each member splits training + validation speakers its own way."""
    cfg = ctx.cfg
    if cfg.members_validate_apart:
        pool = np.sort(np.concatenate([fold.train, fold.val]))
        return _fit_items(ctx, pool, epochs=cfg.epochs, seed=cfg.seed * 1000 + k, validate_apart=True)
    val = _validation(ctx, fold.val)
    chosen = _fit_items(ctx, fold.train, epochs=cfg.epochs, seed=cfg.seed * 1000 + k, val=val)
    if not (cfg.refit and len(fold.val)):
        return chosen
    idx = np.sort(np.concatenate([fold.train, fold.val]))
    refit = _fit_items(ctx, idx, epochs=chosen.best_epoch, seed=cfg.seed * 1000 + 500 + k)
    log.info("fold %s: refitted on %d utterances for %d epochs, %.1f s", fold.name, len(idx), chosen.best_epoch,
             refit.seconds)
    return FitResult(refit.model, chosen.history, chosen.best_epoch, chosen.seconds + refit.seconds)


def _validation(ctx: FoldContext, idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    val = [ctx.features[i] for i in idx]
    if ctx.feature_set.uses_reference:  # validation speakers with profiles of their validation clips
        val = with_speaker_profiles(val, [ctx.speakers[i] for i in idx], ctx.feature_set)
    return val, ctx.y[idx]


def _fit_items(ctx: FoldContext, idx: np.ndarray, *, epochs: int, seed: int, val=None,
               validate_apart: bool = False) -> FitResult:
    """Fit on the utterances ``idx`` with the run's settings: with ``val``, choosing the epoch on it (a fold's
    model); without, for ``epochs`` chosen elsewhere on validation (a fold's refit, the final model). With
    ``validate_apart`` (members fitted apart), member ``i`` trains on ``idx`` less validation speakers of its
    own and chooses its epoch on them (:func:`training.protocols.member_validation`)."""
    cfg, utts = ctx.cfg, ctx.utts

    def fit(build, seed, member=0, idx=idx, val=val):
        item_weights = None
        if cfg.class_weight and utts is not None and len({utts[i].corpus for i in idx}) > 1:
            item_weights = corpus_balance_weights([utts[i] for i in idx], [utts[i].emotion for i in idx])
        return fit_model(
            build, ([ctx.features[i] for i in idx], ctx.y[idx]), val,
            n_classes=len(ctx.labels), epochs=epochs, batch_size=cfg.batch_size, seed=seed,
            patience=cfg.patience if val is not None else None,
            balance=cfg.class_weight, item_weights=item_weights, augment=ctx.augment, lr_schedule=cfg.lr_schedule,
            average_weights=cfg.average_weights,
            sample=_sampler(ctx, idx, draw=member if cfg.members_own_copies else 0),
            consistency=cfg.consistency,
        )

    if ctx.build_member is None:
        return fit(ctx.build, seed)
    from training.models import join_members

    members = cfg.model_args.get("members", 2)
    join = lambda models: join_members(ctx.build(), models)  # noqa: E731
    if not validate_apart:
        return fit_members_apart(lambda s, i: fit(ctx.build_member, s, i), join, members, seed)
    splits = member_validation(utts, idx, members, seed)
    result = fit_members_apart(lambda s, i: fit(ctx.build_member, s, i, splits[i][0], _validation(ctx, splits[i][1])),
                               join, members, seed)
    result.history["member_validation"] = [split[2] or f"{len(split[1])} utterances" for split in splits]
    return result


def _sampler(ctx: FoldContext, idx: np.ndarray, draw: int = 0):
    """Training inputs: for features with a speaker reference, drawn per item and epoch; with degraded copies,
    each item drawn as itself or one of its copies (set ``draw`` of them); else as they are (None)."""
    features, feature_set = [ctx.features[i] for i in idx], ctx.feature_set
    base = (ReferenceSampler(features, [ctx.speakers[i] for i in idx], feature_set)
            if feature_set.uses_reference else None)
    if ctx.copies is None:
        return base
    return CopySampler(features, ctx.copies.for_items(idx, draw), feature_set, base=base, clean=ctx.cfg.degrade_clean)


def _final_fit(ctx: FoldContext, plan: Plan, best_epochs: list[int]) -> tuple[Any, dict[str, Any]]:
    """Fit on every training-corpus utterance for the median epoch count the folds chose on validation (with
    ``members_validate_apart``, unless ``final_all_speakers``: each member on all but its own validation
    speakers, for its own best epoch)."""
    if plan.protocol == "cross-corpus":  # the test corpus stays unseen
        train_idx = np.sort(np.concatenate([plan.folds[0].train, plan.folds[0].val]))
    else:
        train_idx = np.arange(len(ctx.features))
    cfg = ctx.cfg
    apart = cfg.members_validate_apart and not cfg.final_all_speakers
    epochs = cfg.epochs if apart else max(1, int(statistics.median(best_epochs)))
    result = _fit_items(ctx, train_idx, epochs=epochs, seed=cfg.seed * 1000 + 999, validate_apart=apart)
    rule = ("each member its best validation epoch on speakers it did not train on" if apart
            else "median of the best validation epochs over the protocol's folds")
    log.info("final model: %d utterances, %d epochs (%s), %.1f s", len(train_idx), result.best_epoch, rule,
             result.seconds)
    summary = {"utterances": int(len(train_idx)), "epochs": result.best_epoch, "epochs_rule": rule}
    if apart:
        summary |= {"member_epochs": result.history["member_best_epochs"],
                    "member_validation": result.history["member_validation"]}
    return result.model, {**summary, "train_seconds": round(result.seconds, 2)}


# ------------------------------------------------------------------------------------------- scoring


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
    return {"corpus": other.name, "path": portable_path(path), "trained_on": train_name, "emotions": shared,
            "skipped": len(other.utterances) - len(kept),
            "description": f"final model trained on {train_name}, scored on {other.name} (each clip alone, over "
                           "the emotions both share; speaker- and corpus-independent)",
            "metrics": m}

"""``python -m training``: analyse a corpus, train and evaluate a model, export it for the service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

from training.config import DEFAULT_CORPUS, DEFAULT_RECIPE, RECIPES, RENAMED, TrainConfig  # noqa: E402

log = logging.getLogger("training")

EPILOG = """\
examples:
  python -m training analyze                       # EDA of the bundled EMO-DB into runs/
  python -m training train                         # default recipe, leave-one-speaker-out on EMO-DB
  python -m training train --recipe crnn           # one frame model, no speaker reference (1-2 speakers)
  python -m training train --recipe notebook       # the notebook's recipe, same protocol
  python -m training train --data path/to/TESS --protocol speaker --test-speakers YAF
  python -m training train --protocol random --epochs 50 --export emotion
  python -m training train --config my_run.toml --seed 3
  python -m training export runs/<run folder> --name emotion
  python -m training train --data data/emodb --data path/to/TESS --common-emotions   # two corpora together
  python -m training train --robustness --eval-data path/to/TESS --export emotion    # how the default was made
  python -m training evaluate --model models/emotion --data path/to/TESS            # a model on another corpus
  python -m training degrade --data data/emodb --out degraded/                       # the robustness suite as WAV
"""


#: Flags of experiment settings, left out of --help: each still sets its setting, with a warning.
DEPRECATED_FLAGS: dict[str, dict] = {
    "--patience": {"type": int},
    "--lr-schedule": {"choices": ["constant", "cosine"]},
    "--average-weights": {"action": argparse.BooleanOptionalAction},
    "--refit": {"action": argparse.BooleanOptionalAction},
}


def _data_args(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    from training.corpora import LAYOUTS

    if suppress:  # train: several corpora may be trained on together
        p.add_argument("--data", default=d(None), action="append", metavar="PATH",
                       help="corpus folder, or a CSV manifest with columns path,emotion[,speaker]; repeat it to "
                            "train on several corpora together (speakers kept apart per corpus, emotions on one "
                            "vocabulary, each corpus weighted alike) (default: the bundled EMO-DB, "
                            f"{DEFAULT_CORPUS.relative_to(DEFAULT_CORPUS.parents[1])})")
        p.add_argument("--common-emotions", default=d(None), action="store_true",
                       help="with several --data: keep only the emotions every corpus has")
    else:
        p.add_argument("--data", default=d(str(DEFAULT_CORPUS)), metavar="PATH",
                       help="corpus folder, or a CSV manifest with columns path,emotion[,speaker] "
                            f"(default: the bundled EMO-DB, {DEFAULT_CORPUS.relative_to(DEFAULT_CORPUS.parents[1])})")
    p.add_argument("--layout", default=d("auto"), choices=LAYOUTS,
                   help="corpus layout; 'auto' recognises EMO-DB, TESS, RAVDESS, CREMA-D and SAVEE file names, "
                        "else one folder per emotion (default: auto)")
    p.add_argument("--speaker-regex", default=d(None), metavar="REGEX",
                   help="for folder-per-emotion corpora: a regular expression with a group 'speaker' matched "
                        "against each file's path, e.g. '^[^/]+/(?P<speaker>[^_]+)_'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (per-epoch Keras output)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_analyze, _add_manifest, _add_train, _add_evaluate, _add_degrade, _add_export):
        add(sub)
    return parser


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", aliases=["analyse"], help="corpus analysis: counts, durations, examples",
                       description="Write the corpus analysis (emotion and speaker counts, duration histogram, "
                                   "waveform and spectrogram per emotion, report.md) into a new run folder.")
    _data_args(p, suppress=False)
    p.add_argument("--runs-dir", default="runs", help="where run folders are created (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="which example file per emotion is drawn (default: 0)")


def _add_manifest(sub) -> None:
    p = sub.add_parser("manifest", help="write the corpus manifest (path, emotion, label, speaker, ...) as CSV",
                       description="Scan a corpus and write its manifest as CSV; skipped files are reported.")
    _data_args(p, suppress=False)
    p.add_argument("-o", "--output", default="-", help="CSV file to write (default: standard output)")


def _add_train(sub) -> None:
    """Long: one flat list of the train command's flags, in the order --help shows them."""
    from speech_emotion.features import FEATURE_SETS
    from training.protocols import PROTOCOLS

    p = sub.add_parser(
        "train", help="train and evaluate under a protocol; optionally export",
        description="Train and evaluate a model under an evaluation protocol, fit the final model on all the "
                    "data for the epoch count chosen on validation, and write everything into a new run folder. "
                    "Settings: defaults < --config file < flags.",
        epilog="protocols: random (stratified 80/20, speaker-dependent), speaker (held-out test speakers), "
               "loso (leave one speaker out, pooled), cross-corpus (train on --data, test on --test-data). "
               "Validation (epoch choice) always comes from training speakers only.",
    )
    p.add_argument("--config", metavar="TOML", help="TOML file whose keys are the long flag names "
                   "(e.g. protocol = \"speaker\", test_speakers = [\"YAF\"], epochs = 50)")
    _data_args(p, suppress=True)
    S = argparse.SUPPRESS
    p.add_argument("--emotions", default=S, type=lambda s: s.split(","), metavar="E1,E2",
                   help="keep only these emotions (canonical names, comma separated)")
    p.add_argument("--protocol", default=S, choices=PROTOCOLS, help="evaluation protocol (default: loso)")
    p.add_argument("--test-speakers", default=S, type=lambda s: s.split(","), metavar="S1,S2",
                   help="protocol speaker: the held-out speakers (default: a seeded 20%% of speakers)")
    p.add_argument("--test-data", default=S, metavar="PATH", help="protocol cross-corpus: the corpus to test on")
    p.add_argument("--test-layout", default=S, help="layout of --test-data (default: auto)")
    p.add_argument("--recipe", default=S, choices=[*RECIPES, *RENAMED], metavar="RECIPE",
                   help=f"settings bundle (default {DEFAULT_RECIPE}); "
                        + "; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in RECIPES.items()))
    p.add_argument("--features", default=S, choices=[*sorted(FEATURE_SETS), *RENAMED], metavar="FEATURES",
                   help=f"feature set: {', '.join(sorted(FEATURE_SETS))} (default: the recipe's)")
    p.add_argument("--model", default=S, help="model builder: crnn_ensemble, crnn or notebook (default: the recipe's)")
    p.add_argument("--model-arg", dest="model_args", action="append", default=S, metavar="KEY=VALUE",
                   help="model builder argument, value as JSON (e.g. lstm_units=64, dense_units=[64,32]); repeatable")
    p.add_argument("--epochs", default=S, type=int, help="maximum epochs (default: the recipe's)")
    p.add_argument("--batch-size", default=S, type=int, help="batch size (default: the recipe's)")
    p.add_argument("--class-weight", default=S, action=argparse.BooleanOptionalAction,
                   help="weight classes by inverse frequency")
    p.add_argument("--augment", default=S, action=argparse.BooleanOptionalAction,
                   help="augment training items: frequency warp, tempo, SpecAugment masks (frame features only)")
    # Settings for experiments, not for training a model: in a --config TOML (docs/training.md lists every
    # setting). These flags still work for one release, with a warning.
    for flag, kwargs in DEPRECATED_FLAGS.items():
        p.add_argument(flag, default=S, help=S, **kwargs)
    p.add_argument("--degrade-copies", default=S, type=int, metavar="N",
                   help="make N degraded copies of every training clip (noise, babble, reverberation, telephone "
                        "band, MP3, microphone colouring, silence around the speech: training/degrade.py) and "
                        "train on them as well as the clips (default: the recipe's; 0 = off)")
    p.add_argument("--degrade-clean", default=S, type=float, metavar="P",
                   help="with --degrade-copies: chance that an item is drawn as itself rather than a copy "
                        "(default: the recipe's)")
    p.add_argument("--degrade-arg", dest="degrade_args", action="append", default=S, metavar="KEY=VALUE",
                   help="with --degrade-copies: a setting of the copies' degradations (training/degrade.py "
                        "DegradeSettings), value as JSON (e.g. telephone_p=0.4, noise_snr_db=[0,20]); repeatable")
    p.add_argument("--robustness", default=S, action=argparse.BooleanOptionalAction,
                   help="also score every test clip under fixed, seeded degradations (1 s of silence around it, "
                        "white and babble noise at 20 and 10 dB SNR, reverberation, telephone band, MP3 64 kb/s, "
                        "30 dB quieter): one UAR per condition")
    p.add_argument("--eval-data", dest="eval_data", action="append", default=S, metavar="PATH",
                   help="after the final fit, also score the final model on this corpus (the emotions it shares "
                        "with the model; each clip alone): a cross-corpus figure in the metrics and the exported "
                        "metadata; repeatable")
    p.add_argument("--seed", default=S, type=int, help="random seed of splits, initialisation, shuffling (default: 0)")
    p.add_argument("--no-final-fit", dest="final_fit", default=S, action="store_false",
                   help="evaluate only; do not fit the final model on all data")
    p.add_argument("--export", default=S, metavar="NAME",
                   help="export the final model to <models-dir>/NAME/<next version>/ for the service")
    p.add_argument("--models-dir", default=S, help="where exports go (default: models)")
    p.add_argument("--runs-dir", default=S, help="where run folders are created (default: runs)")
    p.add_argument("--cache-dir", default=S, help="feature cache (default: .cache/features)")
    p.add_argument("--no-cache", dest="cache_dir", default=S, action="store_const", const=None,
                   help="do not read or write the feature cache")
    p.add_argument("--jobs", default=S, type=int, help="feature extraction processes (default: all cores)")
    p.add_argument("--ray-address", default=S, metavar="ADDRESS",
                   help="train the protocol's folds as Ray tasks: 'auto' (the cluster this machine is in), "
                        "'ray://HEAD:10001', or 'local' (Ray started here); needs pip install '.[cluster]'. "
                        "Same folds, seeds and results as without it")
    p.add_argument("--ray-cpus-per-fold", default=S, type=int, metavar="N",
                   help="with --ray-address: CPUs each fold's task reserves and trains on (default 2)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score an exported model on a labelled corpus (each clip alone)",
                       description="Score an exported model (models/<name>/<version>/) on a labelled corpus, each clip "
                                   "alone as POST /predict hears it, over the emotions the corpus shares with the "
                                   "model: accuracy, UAR, per-class recall, confusion matrix. On a corpus the model "
                                   "never saw, this is a cross-corpus figure.")
    _data_args(p, suppress=False)
    p.add_argument("--model", dest="model_path", default="models", help="model folder (default: the newest model)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--cache-dir", default=".cache/features", help="feature cache (default: .cache/features)")


def _add_degrade(sub) -> None:
    p = sub.add_parser("degrade", help="write a corpus under the robustness suite's fixed degradations (WAV)",
                       description="Write every file of a corpus under each fixed degradation of the robustness "
                                   "suite (training/degrade.py CONDITIONS) as 16 kHz WAV into OUT/<condition>/, "
                                   "exactly as --robustness scores them (same seeds): to listen to them, or to "
                                   "score them with another system. Each file keeps its path within the corpus, "
                                   "so the copy has the corpus's layout; OUT/<condition>/manifest.csv is the "
                                   "copies' manifest (as `manifest` writes it), for --data whatever the layout.")
    _data_args(p, suppress=False)
    p.add_argument("--out", required=True, help="folder to write into (one subfolder per condition)")
    p.add_argument("--conditions", default=None, type=lambda s: s.split(","), metavar="C1,C2",
                   help="conditions to write (default: all)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run's final model as a SavedModel for the service",
                       description="Export RUN_DIR/model.keras to <models-dir>/<name>/<version>/ (TensorFlow "
                                   "Serving layout) with metadata.json built from the run's metrics. Given an "
                                   "earlier export (models/<name>/<version>) instead, write its weights and "
                                   "metadata again as a new version with this version's serving graph; the "
                                   "new export must answer as the old one does.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train', or an exported model")
    p.add_argument("--name", default=None,
                   help="model name (default: emotion, or the exported model's own name)")
    p.add_argument("--models-dir", default=str(TrainConfig().models_dir), help="default: models")
    p.add_argument("--version", type=int, default=None, help="version number (default: newest + 1)")




def _key_values(items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` flags, each value read as JSON where it is JSON (a number, a list) and kept as text else."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _train_config(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names()}
    for flag in DEPRECATED_FLAGS:
        key = flag[2:].replace("-", "_")
        if key in given:
            log.warning("%s is deprecated and goes in the next release: write %s = %s in a --config TOML file "
                        "(docs/training.md lists every setting)", flag, key, json.dumps(given[key]))
    if isinstance(given.get("data"), list) and len(given["data"]) == 1:
        given["data"] = given["data"][0]
    recipe = given.pop("recipe", None)
    if getattr(args, "config", None):
        cfg = TrainConfig.from_toml(args.config, recipe=recipe)
    else:
        cfg = TrainConfig.from_recipe(recipe) if recipe else TrainConfig()
    for name, flag in (("model_args", "--model-arg"), ("degrade_args", "--degrade-arg")):
        if name in given:
            given[name] = {**getattr(cfg, name), **_key_values(given[name], flag)}
    for key, value in given.items():
        setattr(cfg, key, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _analyze(args: argparse.Namespace) -> int:
    from training.corpora import load_corpus

    from training.analysis import analyse
    from training.report import make_run_dir

    corpus = load_corpus(args.data, layout=args.layout, speaker_regex=args.speaker_regex)
    print(corpus.summary())
    run_dir = make_run_dir(args.runs_dir, corpus.name, "analysis")
    report = analyse(corpus, run_dir, seed=args.seed)
    print(f"analysis written to {run_dir}/ (open {report})")
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from training.corpora import load_corpus

    corpus = load_corpus(args.data, layout=args.layout, speaker_regex=args.speaker_regex)
    print(corpus.summary(), file=sys.stderr)
    if args.output == "-":
        import csv
        from dataclasses import asdict, fields

        from training.corpora import Utterance

        writer = csv.DictWriter(sys.stdout, fieldnames=[f.name for f in fields(Utterance)])
        writer.writeheader()
        writer.writerows(asdict(u) for u in corpus.utterances)
    else:
        print(f"manifest written to {corpus.write_csv(args.output)}", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.train import run_training

    cfg = _train_config(args)
    result = run_training(cfg)
    m = result.metrics
    p = m["pooled"]
    kind = "speaker-independent" if m["speaker_independent"] else "speaker-DEPENDENT"
    print(f"{m['corpus']}{' -> ' + m['test_corpus'] if m['test_corpus'] else ''}, {m['protocol']} "
          f"({kind}), seed {m['seed']}: accuracy {p['accuracy']:.3f}, UAR {p['uar']:.3f}, "
          f"macro-F1 {p['macro_f1']:.3f} over {p['n']} test utterances")
    if result.skipped:
        print(f"skipped {len(result.skipped)} file(s):")
        for s in result.skipped:
            print(f"  {s.path}: {s.reason}")
    if result.export_dir:
        print(f"exported model: {result.export_dir}")
    print(f"run folder: {result.run_dir}/ (report.md, metrics.json, plots)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from speech_emotion.model import ExportedModel
    from speech_emotion.features import pad_batch
    from training.train import score_corpus

    model = ExportedModel.load(args.model_path)

    def predict(inputs):
        order = np.argsort([len(x) for x in inputs], kind="stable")
        probs = np.zeros((len(inputs), len(model.labels)), dtype=np.float32)
        for k in range(0, len(order), 32):  # similar lengths together: little padding
            idx = order[k:k + 32]
            probs[idx] = model.predict(pad_batch([inputs[i] for i in idx]))
        return probs

    result = score_corpus(predict, args.data, model.features, model.labels,
                          model.metadata.training.get("corpus", "?"), cache_dir=args.cache_dir)
    m = result["metrics"]
    print(f"model {model.name} version {model.version} on {result['corpus']} ({m['n']} clips, emotions "
          f"{', '.join(result['emotions'])}; {result['skipped']} not scored): accuracy {m['accuracy']:.3f}, "
          f"UAR {m['uar']:.3f}, macro-F1 {m['macro_f1']:.3f}")
    answers = np.asarray(m["confusion_matrix"]).sum(axis=0)
    print("recall: " + ", ".join(f"{e} {m['per_class'][e]['recall']:.2f}" for e in result["emotions"]))
    print("answers: " + ", ".join(f"{label} {int(n)}" for label, n in zip(model.labels, answers) if n))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _degrade(args: argparse.Namespace) -> int:
    from training.corpora import load_corpus

    from training.copies import write_conditions
    from training.degrade import CONDITIONS

    conditions = args.conditions or list(CONDITIONS)
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONDITIONS)}")
    corpus = load_corpus(args.data, layout=args.layout, speaker_regex=args.speaker_regex)
    files = write_conditions(corpus, args.out, conditions)
    print(f"{len(files)} files written under {args.out}/ ({len(corpus)} clips x {len(conditions)} conditions; "
          f"each condition's folder lists its files with their labels in manifest.csv)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export_run, reexport

    source = Path(args.run_dir)
    if (source / "saved_model.pb").is_file():  # a version folder of an earlier export
        out = reexport(source, args.name, models_dir=args.models_dir, version=args.version)
    else:
        out = export_run(source, args.name or "emotion", models_dir=args.models_dir, version=args.version)
    print(f"exported model: {out}")
    return 0


COMMANDS = {"analyze": _analyze, "analyse": _analyze, "manifest": _manifest, "train": _train,
            "evaluate": _evaluate, "degrade": _degrade, "export": _export}


def _dispatch(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)

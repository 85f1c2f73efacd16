"""One training configuration: a recipe's settings, overridden by a TOML file, overridden by flags."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speech_emotion import PROJECT_ROOT

log = logging.getLogger(__name__)

#: The bundled corpus, default of every command.
DEFAULT_CORPUS = PROJECT_ROOT / "data" / "emodb"


def portable_path(path: str | list[str] | None) -> str | list[str] | None:
    """A path inside the project as a relative one, so metadata does not carry one machine's layout."""
    if isinstance(path, list):
        return [portable_path(p) for p in path]
    if path and Path(path).resolve().is_relative_to(PROJECT_ROOT):
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    return path

#: A recipe is the settings that make a model what it is; ``--recipe`` picks one, anything else overrides.
RECIPES: dict[str, dict[str, Any]] = {
    # The notebook this project grew from, exactly: mean MFCCs, LSTM over 40 coefficients, 100 x 512.
    "notebook": {"features": "notebook", "model": "notebook", "epochs": 100, "batch_size": 512,
                 "class_weight": False, "augment": False, "lr_schedule": "constant", "average_weights": False},
    # Frames: log-mel + pitch (YIN), conv front-end, BiLSTM over time, attention; augmentation that
    # simulates other speakers; class weights; cosine learning-rate decay.
    "crnn": {"features": "logmel", "model": "crnn", "epochs": 60, "batch_size": 32,
             "class_weight": True, "augment": True, "lr_schedule": "cosine", "average_weights": True},
}
# The same, reading each clip relative to its speaker: every log-mel bin minus the speaker's mean spectrum
# (a profile of some of their clips, POST /profile) or, without one, minus the clip's own mean. Trained
# with profiles of random sizes (training/speaker.py) so one model answers with and without a profile.
RECIPES["crnn-speaker"] = {**RECIPES["crnn"], "features": "logmel-speaker"}
# Two crnn-speaker networks in one model, trained side by side each on its own loss, answering the mean of
# their probabilities (training/models.py, build_crnn_ensemble): twice the training time and one model call
# that takes 1.5-1.8 times as long, for 0.810 instead of 0.789 UAR with profiles on EMO-DB across speakers.
RECIPES["crnn-speaker-pair"] = {**RECIPES["crnn-speaker"], "model": "crnn_ensemble", "model_args": {"members": 2}}
# The pair on speech only (speech_emotion/speech.py), log-mel floored 40 dB under the clip's peak, trained on
# degraded copies of the clips as well (noise, babble, rooms, telephone, MP3, microphones, silence around
# the speech: training/copies.py) and on tempo changes of up to +-50 %: for recordings unlike the training
# corpus (benchmarks/README.md, cross-corpus and robustness).
RECIPES["crnn-robust"] = {**RECIPES["crnn-speaker-pair"], "features": "logmel-robust",
                          "augment_args": {"max_time_scale": 0.5}, "degrade_copies": 3, "degrade_clean": 0.5}
# crnn-robust without the speaker reference (features logmel-robust-clip): each clip read on its own, so no
# speaker profiles; and the telephone band in 40 % of the degraded copies rather than 15 %. Better across
# corpora than crnn-robust (benchmarks/README.md).
RECIPES["crnn-robust-clip"] = {**RECIPES["crnn-robust"], "features": "logmel-robust-clip",
                               "degrade_args": {"telephone_p": 0.4}}
# crnn-robust-clip on the band under 4 kHz only (features logmel-robust-4k): what a telephone, a codec or a
# small microphone keeps. Better across corpora than crnn-robust-clip (benchmarks/README.md).
RECIPES["crnn-robust-4k"] = {**RECIPES["crnn-robust-clip"], "features": "logmel-robust-4k"}
# crnn-robust-4k with tempo changes of up to +-25 % instead of +-50 %: the speaking rate is a cue to emotion
# within a corpus (the wider changes cost 0.064 UAR within EMO-DB, leave one speaker out), and +-25 % keeps
# most of what the wider ones gain across corpora (benchmarks/results/2026-12-06-tempo.md).
RECIPES["crnn-robust-4k-tempo25"] = {**RECIPES["crnn-robust-4k"], "augment_args": {"max_time_scale": 0.25}}
# crnn-robust-4k-tempo25 with three members fitted apart, each on its own seed, degraded copies and
# validation speakers (it learns from the other training speakers and chooses its epoch on its own): members
# that differ as separately trained runs do, in one model call 1.4 times the pair's. Across corpora its seeds
# spread a quarter as far as the pair's; within EMO-DB not better (benchmarks/results/2026-12-06-trio.md).
RECIPES["crnn-robust-4k-trio"] = {**RECIPES["crnn-robust-4k-tempo25"], "model_args": {"members": 3},
                                  "members_apart": True, "members_own_copies": True, "members_validate_apart": True}
# crnn-robust-4k-tempo25 trained for 90 epochs instead of 60 (the cosine decay stretched over 90): with 60 the
# folds chose their epoch at the very end. Better within EMO-DB and under the robustness suite, no worse
# across corpora (benchmarks/results/2026-12-06-epochs.md).
RECIPES["crnn-robust-4k-tempo25-e90"] = {**RECIPES["crnn-robust-4k-tempo25"], "epochs": 90}
DEFAULT_RECIPE = "crnn-robust-4k-tempo25-e90"

#: What a recipe that does not name these settings gets: none of the later recipes' additions (not the default
#: recipe's values, which are the fields' defaults: the notebook's recipe has no degraded copies).
RECIPE_BASE: dict[str, Any] = {"model_args": {}, "augment_args": {}, "degrade_args": {}, "degrade_copies": 0,
                               "degrade_clean": 0.5, "members_apart": False,
                               "members_own_copies": False, "members_validate_apart": False,
                               "final_all_speakers": False, "consistency": 0.0}

#: Names that changed, accepted for one more release with a warning. The notebook's recipe, its features and
#: its model were called "seed", the word ``--seed`` uses for the random seed.
RENAMED: dict[str, str] = {"seed": "notebook"}


def current_name(name: str, what: str) -> str:
    """``name``, or what it is called now (with a warning) when it is an old name of a recipe, features or model."""
    if name in RENAMED:
        log.warning("the %s %r is now called %r; the old name goes in the next release", what, name, RENAMED[name])
        return RENAMED[name]
    return name


@dataclass
class TrainConfig:
    # data
    data: str | list[str] = str(DEFAULT_CORPUS)  # one corpus, or several trained on together
    layout: str = "auto"
    common_emotions: bool = False  # with several corpora: keep only the emotions every one of them has
    speaker_regex: str | None = None
    emotions: list[str] | None = None  # keep only these (canonical names); default all
    # protocol
    protocol: str = "loso"
    test_speakers: list[str] | None = None  # for protocol "speaker"; default a seeded 20 % of speakers
    test_data: str | None = None  # for protocol "cross-corpus"
    test_layout: str = "auto"
    # recipe (the defaults are RECIPES[DEFAULT_RECIPE]; see from_recipe)
    recipe: str = DEFAULT_RECIPE
    features: str = RECIPES[DEFAULT_RECIPE]["features"]
    model: str = RECIPES[DEFAULT_RECIPE]["model"]
    model_args: dict[str, Any] = field(default_factory=lambda: dict(RECIPES[DEFAULT_RECIPE].get("model_args", {})))
    epochs: int = RECIPES[DEFAULT_RECIPE]["epochs"]
    batch_size: int = RECIPES[DEFAULT_RECIPE]["batch_size"]
    patience: int | None = None  # stop after this many epochs without a better smoothed validation loss
    class_weight: bool = RECIPES[DEFAULT_RECIPE]["class_weight"]
    augment: bool = RECIPES[DEFAULT_RECIPE]["augment"]
    # settings of the frame augmentation (training/augment.py FrameAugment fields), over its defaults
    augment_args: dict[str, Any] = field(default_factory=lambda: dict(RECIPES[DEFAULT_RECIPE].get("augment_args", {})))
    lr_schedule: str = RECIPES[DEFAULT_RECIPE]["lr_schedule"]  # or "constant"
    average_weights: bool = RECIPES[DEFAULT_RECIPE]["average_weights"]  # mean of the chosen window's weights
    # with an ensemble model (crnn_ensemble): fit each member as a network of its own (its own seed, batches,
    # augmentation draws and epoch), then join them into the one model; else they are fitted side by side
    members_apart: bool = RECIPES[DEFAULT_RECIPE].get("members_apart", False)
    # with members_apart: each member draws from degraded copies of its own (other draws with the same settings),
    # as separately trained runs do, rather than from the run's one set (nothing to do without degrade_copies)
    members_own_copies: bool = RECIPES[DEFAULT_RECIPE].get("members_own_copies", False)
    # with members_apart: each member holds out validation speakers of its own (a different group for each
    # member), trains on the rest of the training speakers and chooses its epoch on its own; the final model's
    # members likewise (unless final_all_speakers), rather than all speakers for the folds' median epoch count.
    # The members then differ in the speakers they learnt from (as in bagging), and together they learnt from
    # every speaker
    members_validate_apart: bool = RECIPES[DEFAULT_RECIPE].get("members_validate_apart", False)
    # with members_validate_apart: the final model's members (not the folds') train on every speaker, for the
    # folds' median epoch count, rather than each leaving out its own validation speakers
    final_all_speakers: bool = RECIPES[DEFAULT_RECIPE].get("final_all_speakers", False)
    # evaluate each fold's model refitted on its training + validation speakers for the epochs validation chose
    refit: bool = False
    # degraded copies of every training clip (training/copies.py): 0 = off; each epoch an item is itself
    # with probability degrade_clean, else one of its copies
    degrade_copies: int = RECIPES[DEFAULT_RECIPE].get("degrade_copies", 0)
    degrade_clean: float = RECIPES[DEFAULT_RECIPE].get("degrade_clean", 0.5)
    # with degrade_copies: every batch holds each item twice, as itself and as one of its copies (both
    # augmented), and the loss adds this weight times the Jensen-Shannon divergence between the two answers
    # (as AugMix does): the model is taught to answer a clip the same through any recording. 0 = off
    consistency: float = RECIPES[DEFAULT_RECIPE].get("consistency", 0.0)
    # probabilities and ranges of the copies' degradations (training/degrade.py DegradeSettings fields), over
    # its defaults
    degrade_args: dict[str, Any] = field(default_factory=lambda: dict(RECIPES[DEFAULT_RECIPE].get("degrade_args", {})))
    # score every test clip under the fixed degradations of training/degrade.py CONDITIONS too
    robustness: bool = False
    # after the final fit, score the final model on these corpora too (their emotions shared with it)
    eval_data: list[str] | None = None
    seed: int = 0
    # final model on all data, for export
    final_fit: bool = True
    export: str | None = None  # model name: write models/<name>/<next version>/
    models_dir: str = str(PROJECT_ROOT / "models")
    # where things go
    runs_dir: str = "runs"
    cache_dir: str | None = ".cache/features"
    jobs: int | None = None
    progress: bool = True
    # run the folds as Ray tasks on this cluster ("auto", "ray://head:10001", or "local" for a Ray instance
    # started on this machine), each with this many CPUs; None: one after another in this process
    ray_address: str | None = None
    ray_cpus_per_fold: int = 2

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_recipe(cls, recipe: str = DEFAULT_RECIPE, **overrides: Any) -> "TrainConfig":
        recipe = current_name(recipe, "recipe")
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        unknown = set(overrides) - cls.field_names()
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        settings = {**RECIPE_BASE, **RECIPES[recipe], **overrides, "recipe": recipe}
        return cls(**{**settings, "model_args": dict(settings["model_args"]),
                      "augment_args": dict(settings["augment_args"]), "degrade_args": dict(settings["degrade_args"])})

    @classmethod
    def from_toml(cls, path: str | Path, recipe: str | None = None) -> "TrainConfig":
        """The TOML's settings over its recipe (or ``recipe``, when given, e.g. by a flag)."""
        with open(path, "rb") as f:
            data = tomllib.load(f)
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = set(data) - cls.field_names()
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        chosen = recipe or data.pop("recipe", DEFAULT_RECIPE)
        data.pop("recipe", None)
        return cls.from_recipe(chosen, **data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

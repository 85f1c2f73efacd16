"""``python -m speech_emotion score INPUT... --output FILE``: bulk scoring (speech_emotion/score.py)."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m speech_emotion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score", help="score an archive of recordings into a CSV or Parquet file",
        description="One row per recording (path, emotion, probability, one column per label, speech seconds, "
                    "the error for a file that could not be scored), as POST /predict answers: the same "
                    "decoding, speech detection, features and model. An interrupted run started again with the "
                    "same --output finishes it.")
    score.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="a folder (its audio files, recursively), a glob ('calls/**/*.wav'), a CSV with a "
                            "'path' column, or an audio file")
    score.add_argument("--output", "-o", required=True, help="FILE.csv or FILE.parquet (Parquet needs pyarrow)")
    score.add_argument("--model", default=os.environ.get("SER_MODEL_PATH", "models"),
                       help="SavedModel: a version folder, a model folder (its newest version) or a models root "
                            "holding one model (default: $SER_MODEL_PATH or models)")
    score.add_argument("--timeline", action="store_true",
                       help="also one row per window of each recording (columns start and end)")
    score.add_argument("--jobs", "-j", type=int, default=0, help="worker processes (default: one per core)")
    score.add_argument("--chunk", type=int, default=64, help="recordings per task (the unit of resuming; default 64)")
    score.add_argument("--ray-address", metavar="ADDRESS",
                       help="run the tasks on Ray instead: 'auto' (the cluster this machine is in), "
                            "'ray://HEAD:10001', or 'local' (a Ray instance started here); needs .[cluster]")
    score.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from speech_emotion.model import ModelNotFoundError
    from speech_emotion.score import ScoreError, score

    if args.jobs < 0 or args.chunk < 1:
        print("error: --jobs must be >= 0 and --chunk >= 1", file=sys.stderr)
        return 2
    try:
        run = score(args.inputs, args.output, model=args.model, timeline=args.timeline, jobs=args.jobs,
                    chunk=args.chunk, ray_address=args.ray_address, progress=args.progress)
    except (ScoreError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to finish ({args.output}.partial.jsonl holds what "
              "is done)", file=sys.stderr)
        return 130
    for line in run.errors[:20]:
        print(f"not scored: {line}", file=sys.stderr)
    if len(run.errors) > 20:
        print(f"... and {len(run.errors) - 20} more (column 'error' of {run.output})", file=sys.stderr)
    rate = run.scored / run.seconds if run.seconds > 0 else float("nan")
    print(f"{run.output}: {run.rows} rows; {run.scored} recordings scored in {run.seconds:.1f} s "
          f"({rate:.1f}/s), {run.resumed} from the interrupted run, {run.failed} could not be scored")
    return 0


if __name__ == "__main__":
    sys.exit(main())

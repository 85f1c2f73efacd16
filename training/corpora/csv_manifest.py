"""A manifest the user writes: a CSV with columns ``path,emotion[,speaker]``.

Paths are relative to the CSV's folder (or absolute). Emotions are mapped to the canonical vocabulary
when they are one of its words or synonyms; other labels are kept as they are (lower-cased), so a corpus
with its own classes still trains.
"""

from __future__ import annotations

import csv
from pathlib import Path

from training.corpora.manifest import Labelled, canonical_emotion

REQUIRED = ("path", "emotion")


def read(csv_path: Path) -> list[tuple[Path, Labelled]]:
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}; "
                             f"expected a header like 'path,emotion,speaker'")
        rows = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("path") or not row.get("emotion"):
                raise ValueError(f"{csv_path}:{line}: empty path or emotion")
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            label = row["emotion"]
            emotion = canonical_emotion(label) or label.lower()
            rows.append((path, Labelled(emotion=emotion, label=label, speaker=row.get("speaker", ""))))
        return rows

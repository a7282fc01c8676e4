"""What the report shows for one prediction folder: scores (when there is GT), per-image
figures, the worst images, and what the run's manifest and config recorded."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pseudolabel.core.errors import ConfigError, MaskError
from pseudolabel.core.masks import IGNORE_INDEX, read_mask
from pseudolabel.core.safe_paths import id_path
from pseudolabel.datasets.base import Dataset
from pseudolabel.evaluate.scoring import ImageScore, pair_with_dataset, score_pairs
from pseudolabel.evaluate.summary import IMAGE_KEYS, per_image_rows, score_summary, worst_images
from pseudolabel.runner.manifest import read_manifest


@dataclass
class RunFacts:
    """What a run's records say: mean seconds per stage, failures, exclusion and POLE tallies, settings."""

    images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    excluded_pairs: int = 0
    synonyms: dict[str, Counter[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictionFacts:
    """Everything the report shows for one prediction folder."""

    name: str
    folder: Path
    scores: dict[str, Any] | None
    images: list[ImageScore]
    run: RunFacts


def read_run_facts(folder: Path) -> RunFacts:
    """Facts from ``folder``'s manifests (every shard's) and ``config.yaml``, when present."""
    facts = RunFacts()
    totals: Counter[str] = Counter()
    for manifest in sorted(folder.glob("manifest*.jsonl")):
        for record in read_manifest(manifest):
            facts.images += 1
            if record.get("status") == "failed":
                facts.failed.append((str(record.get("id")), str(record.get("error"))))
            totals.update({k: float(v) for k, v in record.items() if k.endswith("_s") and isinstance(v, int | float)})
            facts.excluded.update(record.get("excluded", []))
            facts.excluded_pairs += len(record.get("exclusions", []))
            for class_name, chosen in record.get("synonyms", {}).items():
                facts.synonyms.setdefault(class_name, Counter())[chosen] += 1
    facts.seconds = {key: value / facts.images for key, value in sorted(totals.items())} if facts.images else {}
    config = folder / "config.yaml"
    if config.is_file():
        try:
            facts.settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            facts.settings = {"config.yaml": "unreadable"}
    return facts


def collect(folder: Path, dataset: Dataset, name: str, allow_missing: bool, workers: int | None) -> PredictionFacts:
    """Scores and per-image figures of ``folder`` against the split's GT (none without GT), and its
    run facts."""
    if not folder.is_dir():
        raise ConfigError(f"prediction folder {folder} does not exist")
    try:
        pair_set = pair_with_dataset(folder, dataset, allow_missing)
    except ConfigError as error:
        if "has a GT mask" not in str(error):
            raise
        return PredictionFacts(name, folder, None, [], read_run_facts(folder))
    counts, images = score_pairs(pair_set.pairs, dataset.num_classes, workers)
    scores = score_summary(counts, dataset.class_names, pair_set)
    return PredictionFacts(name, folder, scores, images, read_run_facts(folder))


def table_rows(predictions: list[PredictionFacts]) -> list[dict[str, Any]]:
    """Rows of the per-image table: id, GT classes, and each prediction's figures by its name."""
    rows: dict[str, dict[str, Any]] = {}
    for prediction in predictions:
        for row in per_image_rows(prediction.images):
            entry = rows.setdefault(row["id"], {"id": row["id"], "classes": [], "by": {}})
            entry["classes"] = sorted({*entry["classes"], *(c for c, v in enumerate(row["iou"]) if v is not None)})
            entry["by"][prediction.name] = {key: row[key] for key in IMAGE_KEYS}
    return list(rows.values())


def worst_ids(prediction: PredictionFacts, count: int) -> list[str]:
    """Ids of the prediction's ``count`` lowest-mIoU images."""
    return [score.image_id for score in worst_images(prediction.images, count)]


def most_unsure_ids(prediction: PredictionFacts, dataset: Dataset, count: int) -> list[str]:
    """Without GT: ids of the ``count`` masks with the largest share of unsure (255) pixels, ties
    in split order; images without a readable mask are left out."""
    shares = []
    for position, image_id in enumerate(dataset.ids()):
        path = id_path(prediction.folder, image_id, ".png")
        try:
            label_map = read_mask(path)
        except (MaskError, OSError):
            continue
        shares.append((-float((label_map == IGNORE_INDEX).mean()), position, image_id))
    return [image_id for _, _, image_id in sorted(shares)[:count]]


def review_ids(prediction: PredictionFacts, dataset: Dataset, count: int) -> tuple[list[str], str]:
    """The ``count`` images a person should check first, and how they were chosen: lowest mIoU
    against GT, else most unsure pixels."""
    if prediction.scores:
        return worst_ids(prediction, count), "of lowest mIoU"
    return most_unsure_ids(prediction, dataset, count), "with the most unsure pixels"


def dump_json(value: Any) -> str:
    """JSON for embedding in a <script> element (no ``</`` sequences)."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")

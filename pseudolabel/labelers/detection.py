"""Open-vocabulary detection for the ``grounded-sam`` labeler: Grounding DINO's and MM-Grounding-DINO's
captions, token spans and thresholds (see :mod:`pseudolabel.labelers.grounded_sam` for the two
caption modes), OWLv2's per-query best class, and per-class NMS for all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from pseudolabel.labelers.options import DetectorOptions
from pseudolabel.models.grounding import GroundingDino
from pseudolabel.models.owl import OwlDetector


@dataclass(frozen=True)
class Detections:
    """Kept boxes of one image.

    Attributes:
        boxes: float [N, 4] as x0, y0, x1, y1 in pixels of the original image.
        scores: float [N] class probability of each detection.
        classes: int [N] index into the caption's names.
        queries: int [N] the detector query each came from (a query can detect several classes).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    queries: torch.Tensor


def caption_spans(tokenizer: Any, names: list[str]) -> tuple[str, dict[str, torch.Tensor], list[list[int]]]:
    """The caption ``"a . b ."`` (lower case), its encoding, and each name's token positions."""
    caption = " . ".join(name.lower().strip() for name in names) + " ."
    encoding = tokenizer([caption], return_tensors="pt", return_offsets_mapping=True)
    offsets = encoding.pop("offset_mapping")[0].tolist()
    spans, start = [], 0
    for name in names:
        end = start + len(name.strip())
        spans.append([i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end])
        start = end + len(" . ")
    return caption, dict(encoding), spans


def class_probabilities(token_probabilities: torch.Tensor, spans: list[list[int]]) -> torch.Tensor:
    """Per query and class, the highest token probability in the class's span: [Q, C] from [Q, T]."""
    return torch.stack([token_probabilities[:, span].amax(dim=1) for span in spans], dim=1)


def select_detections(
    class_probs: torch.Tensor,
    boxes: torch.Tensor,
    box_threshold: float,
    text_threshold: float,
    nms_threshold: float,
    max_detections: int | None = None,
) -> Detections:
    """``joint`` captions: thresholds (strict, as groundingdino-py), per-class NMS, then the
    ``max_detections`` best.

    Args:
        class_probs: [Q, C] from :func:`class_probabilities`.
        boxes: [Q, 4] x0, y0, x1, y1 (any unit).
    """
    kept_queries = class_probs.amax(dim=1) > box_threshold
    queries, classes = torch.nonzero((class_probs > text_threshold) & kept_queries[:, None], as_tuple=True)
    scores = class_probs[queries, classes]
    return nms_per_class(Detections(boxes[queries], scores, classes, queries), nms_threshold, max_detections)


def select_class_detections(
    token_probs: list[torch.Tensor],
    boxes: list[torch.Tensor],
    box_threshold: float,
    nms_threshold: float,
    max_detections: int | None = None,
) -> Detections:
    """``per-class`` captions: the detections of one detector pass per class.

    Args:
        token_probs: per class, [Q, T] token probabilities of its pass (masked tokens 0).
        boxes: per class, [Q, 4] x0, y0, x1, y1 of its pass.

    Returns:
        a query is a box of the class when its highest probability over all T tokens is above
        ``box_threshold`` (groundingdino-py's ``predict``); that maximum is the score. Query ids
        are numbered across passes (pass c's query q is ``c * Q + q``), so each box is its own.
        After per-class NMS, the ``max_detections`` best are kept.
    """
    found = []
    for index, (probs, class_boxes) in enumerate(zip(token_probs, boxes, strict=True)):
        best = probs.amax(dim=1)
        (queries,) = torch.nonzero(best > box_threshold, as_tuple=True)
        classes = torch.full_like(queries, index)
        found.append(Detections(class_boxes[queries], best[queries], classes, queries + index * len(probs)))
    joined = Detections(*(torch.cat([getattr(d, f) for d in found]) for f in ("boxes", "scores", "classes", "queries")))
    return nms_per_class(joined, nms_threshold, max_detections)


def nms_per_class(found: Detections, nms_threshold: float, max_detections: int | None = None) -> Detections:
    """Drop a box that overlaps a higher-scoring box of the same class by IoU above the threshold,
    then keep the ``max_detections`` highest-scoring boxes (None: all)."""
    keep = batched_nms(found.boxes.float(), found.scores.float(), found.classes, nms_threshold)[:max_detections]
    return Detections(found.boxes[keep], found.scores[keep], found.classes[keep], found.queries[keep])


def centre_to_corners(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised cx, cy, w, h [N, 4] -> x0, y0, x1, y1 in pixels, not clipped, computed as
    SAM_WSSS does (scale, move the corner back by half the size, add the size)."""
    scaled = boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    corner = scaled[:, :2] - scaled[:, 2:] / 2
    return torch.cat([corner, corner + scaled[:, 2:]], dim=1)


def detector_pass(
    detector: GroundingDino, rgb: np.ndarray, encoding: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Grounding DINO pass over uint8 [H, W, 3] ``rgb`` (its backbone features reused) and one
    tokenised caption: token probabilities [Q, T] (padding 0) and boxes [Q, 4] as normalised
    cx, cy, w, h."""
    outputs = detector.detect_pass(rgb, encoding)
    return outputs.logits[0].float().sigmoid(), outputs.pred_boxes[0].float()


def select_owl_detections(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    height: int,
    width: int,
    box_threshold: float,
    nms_threshold: float,
    max_detections: int | None = None,
) -> Detections:
    """OWLv2's ``post_process_object_detection``: a query's class is its highest logit and its score
    that logit's sigmoid, kept above ``box_threshold`` (strict); boxes (normalised cx, cy, w, h of
    the padded square) become x0, y0, x1, y1 in pixels of the original image by the square's side.
    Then per-class NMS and the ``max_detections`` best, as for Grounding DINO.

    Args:
        logits: [Q, C] one column per class query. boxes: [Q, 4].
    """
    best = logits.max(dim=1)
    scores = best.values.sigmoid()
    (queries,) = torch.nonzero(scores > box_threshold, as_tuple=True)
    centre, size = boxes[:, :2], boxes[:, 2:]
    corners = torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=1) * max(height, width)
    found = Detections(corners[queries], scores[queries], best.indices[queries], queries)
    return nms_per_class(found, nms_threshold, max_detections)


@torch.no_grad()
def owl_pass(detector: OwlDetector, rgb: np.ndarray, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """One OWLv2 forward with one text query per name: logits [Q, C] and boxes [Q, 4] as normalised
    cx, cy, w, h of the padded square."""
    device, autocast = detector.device, detector.autocast_dtype
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        outputs = detector.model(pixel_values=detector.pixel_values(rgb), **detector.text_inputs(names))
    return outputs.logits[0].float(), outputs.pred_boxes[0].float()


def detect(
    detector: GroundingDino | OwlDetector,
    rgb: np.ndarray,
    names: list[str],
    options: DetectorOptions,
) -> Detections:
    """Detections of ``names`` in uint8 [H, W, 3] ``rgb``, at the detector's precision. OWLv2: one
    pass, each name a query (``captions`` and ``text_threshold`` do not apply). Grounding DINO and
    MM-Grounding-DINO: one pass for ``joint`` captions, one per name for ``per-class`` (the image
    backbone runs once for all)."""
    height, width = rgb.shape[:2]
    cap = options.max_detections or None
    if isinstance(detector, OwlDetector):
        logits, boxes = owl_pass(detector, rgb, names)
        return select_owl_detections(logits, boxes, height, width, options.box_threshold, options.nms_threshold, cap)
    if options.captions == "per-class":
        probs, boxes = [], []
        for name in names:
            caption = name.lower().strip()
            caption = caption if caption.endswith(".") else caption + "."
            encoding = dict(detector.tokenizer([caption], return_tensors="pt"))
            token_probs, centre_boxes = detector_pass(detector, rgb, encoding)
            probs.append(token_probs)
            boxes.append(centre_to_corners(centre_boxes, height, width))
        return select_class_detections(probs, boxes, options.box_threshold, options.nms_threshold, cap)
    _, encoding, spans = caption_spans(detector.tokenizer, names)
    token_probs, centre_boxes = detector_pass(detector, rgb, encoding)
    return select_detections(
        class_probabilities(token_probs, spans),
        centre_to_corners(centre_boxes, height, width),
        options.box_threshold,
        options.text_threshold,
        options.nms_threshold,
        cap,
    )

"""The ``grounded-sam`` labeler: Grounding DINO boxes for the image's classes, SAM masks from those
boxes, merged into ScoreMaps by confidence.

Per image:

1. **Detect**, with one of two caption modes:

   * ``joint`` (default, one detector pass): one caption ``"cat . dog ."`` holds all candidate
     classes; each class owns the caption tokens of its name. A query's class probability is
     the highest token probability (sigmoid of the logit) inside that class's span. A query is
     a box when its best class is above ``box_threshold``; it is a detection of every class
     above ``text_threshold`` (the reference maps the thresholded phrase back to a class by
     substring matching, which confuses "car" and "cart"; spans cannot).
   * ``per-class`` (as SAM_WSSS ran it for the survey's 86.4): one pass per class with the
     caption ``"name."``; a query is a box of that class when its highest probability over
     ALL caption tokens (special tokens and the period included) is above ``box_threshold``,
     and that maximum is its score. ``text_threshold`` plays no part (the reference only builds
     phrases from it and discards them).

   Both compare strictly (``>``) and leave boxes unclipped, as groundingdino-py does. Per-class
   NMS then removes duplicates (``nms_threshold`` 1 keeps every box, as the reference does).
2. **Segment**: every distinct kept box prompts SAM in one batched call per image (one image
   embedding, single-mask output).
   With ``--synonyms pole`` each class's detected region (the union of its masks) then picks
   the closest of the class's candidate names (POLE), and steps 1-2 run again with the chosen
   names when any changed (the image embedding is reused).
3. **Exclude** (optional): ELSE-style, each mask is a region; a mask whose class is impossible
   there is dropped.
4. **Merge**: confidence = box score x SAM's predicted IoU. Channel c holds, per pixel, the best
   confidence of class c's masks covering it; background is 1 where no mask covers the pixel and
   0 elsewhere. Decoding takes the most confident class, so overlaps go to the more confident
   mask (not to the higher class index as in the reference), and ``--unsure-margin`` marks
   pixels whose two best classes are closer than the margin as 255.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.ops import batched_nms

from pseudolabel.datasets.base import Sample
from pseudolabel.exclusion import DEFAULT_THRESHOLD, ClassExclusion, zero_shot_classes
from pseudolabel.models.clip import ClipModel
from pseudolabel.models.grounding import GroundingDino
from pseudolabel.pole import DEFAULT_CANDIDATES, choose_synonyms
from pseudolabel.prompts import PromptSet
from pseudolabel.scoremaps import ScoreMaps

SYNONYM_MODES = ("none", "fuse", "detector", "pole")
CAPTION_MODES = ("joint", "per-class")


@dataclass(frozen=True)
class GroundedSamOptions:
    """Detector thresholds, prompts and the optional exclusion / zero-shot steps.

    Attributes:
        box_threshold: keep a query whose best probability is above this (0.3).
        text_threshold: ``joint`` captions: a kept query detects every class above this (0.25).
        nms_threshold: per-class NMS IoU (1 keeps every box).
        captions: ``joint`` (one caption for all classes) or ``per-class`` (one pass per class).
        synonyms: ``none`` (class names), ``fuse`` (the prompt file's fused display names),
            ``detector`` (the prompt file's detector names, SAM_WSSS's renamed VOC classes) or
            ``pole`` (per image and class, the candidate name closest to the class's detected
            region; detection runs again with the chosen names).
        pole_candidates: names per class POLE chooses among (class name included).
        sam_batch: box prompts per SAM decoder call.
    """

    box_threshold: float = 0.3
    text_threshold: float = 0.25
    nms_threshold: float = 0.7
    captions: str = "joint"
    synonyms: str = "none"
    pole_candidates: int = DEFAULT_CANDIDATES
    sam_batch: int = 64
    exclude: bool = False
    exclusion_threshold: float = DEFAULT_THRESHOLD
    zero_shot: bool = False
    zero_shot_top_k: int = 3
    zero_shot_min_probability: float = 0.1


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
    class_probs: torch.Tensor, boxes: torch.Tensor, box_threshold: float, text_threshold: float, nms_threshold: float
) -> Detections:
    """``joint`` captions: thresholds (strict, as groundingdino-py) and per-class NMS.

    Args:
        class_probs: [Q, C] from :func:`class_probabilities`.
        boxes: [Q, 4] x0, y0, x1, y1 (any unit).
    """
    kept_queries = class_probs.amax(dim=1) > box_threshold
    queries, classes = torch.nonzero((class_probs > text_threshold) & kept_queries[:, None], as_tuple=True)
    scores = class_probs[queries, classes]
    return nms_per_class(Detections(boxes[queries], scores, classes, queries), nms_threshold)


def select_class_detections(
    token_probs: list[torch.Tensor], boxes: list[torch.Tensor], box_threshold: float, nms_threshold: float
) -> Detections:
    """``per-class`` captions: the detections of one detector pass per class.

    Args:
        token_probs: per class, [Q, T] token probabilities of its pass (masked tokens 0).
        boxes: per class, [Q, 4] x0, y0, x1, y1 of its pass.

    Returns:
        a query is a box of the class when its highest probability over all T tokens is above
        ``box_threshold`` (groundingdino-py's ``predict``); that maximum is the score. Query ids
        are numbered across passes (pass c's query q is ``c * Q + q``), so each box is its own.
    """
    found = []
    for index, (probs, class_boxes) in enumerate(zip(token_probs, boxes, strict=True)):
        best = probs.amax(dim=1)
        (queries,) = torch.nonzero(best > box_threshold, as_tuple=True)
        classes = torch.full_like(queries, index)
        found.append(Detections(class_boxes[queries], best[queries], classes, queries + index * len(probs)))
    joined = Detections(*(torch.cat([getattr(d, f) for d in found]) for f in ("boxes", "scores", "classes", "queries")))
    return nms_per_class(joined, nms_threshold)


def nms_per_class(found: Detections, nms_threshold: float) -> Detections:
    """Drop a box that overlaps a higher-scoring box of the same class by IoU above the threshold."""
    keep = batched_nms(found.boxes.float(), found.scores.float(), found.classes, nms_threshold)
    return Detections(found.boxes[keep], found.scores[keep], found.classes[keep], found.queries[keep])


def centre_to_corners(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised cx, cy, w, h [N, 4] -> x0, y0, x1, y1 in pixels, not clipped, computed as
    SAM_WSSS does (scale, move the corner back by half the size, add the size)."""
    scaled = boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    corner = scaled[:, :2] - scaled[:, 2:] / 2
    return torch.cat([corner, corner + scaled[:, 2:]], dim=1)


@torch.no_grad()
def detector_pass(
    detector: GroundingDino, pixels: torch.Tensor, encoding: dict[str, torch.Tensor], autocast: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Grounding DINO forward: token probabilities [Q, T] (padding 0) and boxes [Q, 4] as
    normalised cx, cy, w, h, for pixels [1, 3, h, w] and one tokenised caption."""
    device = detector.device
    inputs = {key: value.to(device) for key, value in encoding.items()}
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        outputs = detector.model(
            pixel_values=pixels, pixel_mask=torch.ones_like(pixels[:, 0], dtype=torch.long), **inputs
        )
    return outputs.logits[0].float().sigmoid(), outputs.pred_boxes[0].float()


def detect(
    detector: GroundingDino,
    rgb: np.ndarray,
    names: list[str],
    options: GroundedSamOptions,
    autocast_dtype: torch.dtype | None = None,
) -> Detections:
    """Grounding DINO detections of ``names`` in uint8 [H, W, 3] ``rgb``: one pass for ``joint``
    captions, one per name for ``per-class``."""
    height, width = rgb.shape[:2]
    pixels = detector.pixel_values(rgb)
    if options.captions == "per-class":
        probs, boxes = [], []
        for name in names:
            caption = name.lower().strip()
            caption = caption if caption.endswith(".") else caption + "."
            encoding = dict(detector.tokenizer([caption], return_tensors="pt"))
            token_probs, centre_boxes = detector_pass(detector, pixels, encoding, autocast_dtype)
            probs.append(token_probs)
            boxes.append(centre_to_corners(centre_boxes, height, width))
        return select_class_detections(probs, boxes, options.box_threshold, options.nms_threshold)
    _, encoding, spans = caption_spans(detector.tokenizer, names)
    token_probs, centre_boxes = detector_pass(detector, pixels, encoding, autocast_dtype)
    return select_detections(
        class_probabilities(token_probs, spans),
        centre_to_corners(centre_boxes, height, width),
        options.box_threshold,
        options.text_threshold,
        options.nms_threshold,
    )


class BoxMaskPredictor(Protocol):
    """What the labeler needs from SAM (a fake can stand in for tests)."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box: (bool [N, H, W], predicted IoU [N]) for x0, y0, x1, y1 pixel boxes [N, 4]."""
        ...


class SamBoxPredictor:
    """``BoxMaskPredictor`` over ``segment_anything.SamPredictor``: all boxes of an image in batches."""

    def __init__(self, sam: Any, batch: int = 64, autocast_dtype: torch.dtype | None = None) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam)
        self.batch = batch
        self.autocast_dtype = autocast_dtype

    def _autocast(self) -> Any:
        device = self.predictor.device
        return torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> None:
        with self._autocast():
            self.predictor.set_image(np.ascontiguousarray(rgb), image_format="RGB")
        self.predictor.features = self.predictor.features.float()

    @torch.no_grad()
    def predict_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor
        masks, scores = [], []
        for start in range(0, len(boxes), self.batch):
            chunk = predictor.transform.apply_boxes_torch(
                boxes[start : start + self.batch].float(), predictor.original_size
            )
            with self._autocast():
                batch_masks, batch_scores, _ = predictor.predict_torch(
                    None, None, boxes=chunk.to(predictor.device), multimask_output=False
                )
            masks.append(batch_masks[:, 0])
            scores.append(batch_scores[:, 0].float())
        return torch.cat(masks), torch.cat(scores)


def merge_by_confidence(
    masks: torch.Tensor, confidences: torch.Tensor, channels: torch.Tensor, num_channels: int
) -> torch.Tensor:
    """ScoreMaps scores [num_channels, H, W] from masks.

    Args:
        masks: bool [N, H, W]; confidences: [N]; channels: int [N] in 1..num_channels-1.

    Returns:
        channel c > 0: per pixel, the highest confidence among channel c's masks covering it (0
        where none does); channel 0 (background): 1 where no mask covers the pixel, else 0.
    """
    height, width = masks.shape[1:]
    scores = torch.zeros(num_channels, height, width, device=masks.device)
    for channel in channels.unique().tolist():
        chosen = channels == channel
        scores[channel] = (masks[chosen].float() * confidences[chosen, None, None].float()).amax(dim=0)
    scores[0] = (~masks.any(dim=0)).float()
    return scores


class GroundedSamLabeler:
    """Sample -> ScoreMaps with Grounding DINO + SAM; models are built once and reused."""

    def __init__(
        self,
        detector: GroundingDino,
        sam: BoxMaskPredictor,
        prompts: PromptSet,
        options: GroundedSamOptions | None = None,
        clip: ClipModel | None = None,
        exclusion: ClassExclusion | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        """``clip`` is needed for zero-shot candidates, POLE and exclusion; ``exclusion`` replaces the
        default plain-CLIP exclusion (e.g. a CLIPN-based one)."""
        self.detector = detector
        self.sam = sam
        self.prompts = prompts
        self.options = options or GroundedSamOptions()
        if self.options.synonyms not in SYNONYM_MODES:
            raise ValueError(f"grounded-sam synonyms must be one of {SYNONYM_MODES}")
        if self.options.captions not in CAPTION_MODES:
            raise ValueError(f"grounded-sam captions must be one of {CAPTION_MODES}")
        options = self.options
        if (options.zero_shot or options.synonyms == "pole" or options.exclude) and clip is None:
            raise ValueError("zero-shot candidates, POLE and exclusion need a CLIP model")
        self.clip = clip
        self.exclusion = exclusion
        if options.exclude and exclusion is None:
            self.exclusion = ClassExclusion(clip, prompts, options.exclusion_threshold)
        self.autocast_dtype = autocast_dtype

    def __call__(self, sample: Sample) -> tuple[ScoreMaps, dict[str, Any]]:
        """Score maps [bg, classes...] of the sample and its manifest record (stage seconds,
        detections, exclusions)."""
        record: dict[str, Any] = {}
        height, width = sample.rgb.shape[:2]
        class_ids = list(sample.labels)
        if self.options.zero_shot:
            class_ids, record["candidates"] = zero_shot_classes(
                self.clip,
                sample.rgb,
                self.prompts,
                self.options.zero_shot_top_k,
                self.options.zero_shot_min_probability,
            )
            record["classes"] = [self.prompts.classes[c].name for c in class_ids]
        if not class_ids:
            background = np.ones((1, height, width), dtype=np.float32)
            return ScoreMaps(background, (0,)), {**record, "detections": 0}
        names = self._names(class_ids)
        masks, confidences, channels = self._segment(sample, names, record)
        if self.options.synonyms == "pole":
            start = time.perf_counter()
            names = self._pole_names(sample, class_ids, masks, channels, record)
            record["pole_s"] = round(time.perf_counter() - start, 4)
            if names != self._names(class_ids):
                masks, confidences, channels = self._segment(sample, names, record)
        if self.options.exclude and len(masks):
            masks, confidences, channels = self._exclude(sample, class_ids, masks, confidences, channels, record)
        start = time.perf_counter()
        scores = merge_by_confidence(masks, confidences, channels, len(class_ids) + 1)
        record["merge_s"] = round(time.perf_counter() - start, 4)
        return ScoreMaps(scores.cpu().numpy(), (0, *class_ids)), record

    def _names(self, class_ids: list[int]) -> list[str]:
        return self.prompts.prompt_names(class_ids, self.options.synonyms)

    def _segment(
        self, sample: Sample, names: list[str], record: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect ``names`` and segment every distinct box: masks bool [N, H, W], confidence
        (box score x SAM IoU) [N], channel (1 + index into ``names``) [N]."""
        height, width = sample.rgb.shape[:2]
        start = time.perf_counter()
        found = detect(self.detector, sample.rgb, names, self.options, self.autocast_dtype)
        record["detector_s"] = round(record.get("detector_s", 0) + time.perf_counter() - start, 4)
        record["detections"] = len(found.scores)
        if not len(found.scores):
            return torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0), found.classes + 1
        start = time.perf_counter()
        unique_queries, box_of = found.queries.unique(return_inverse=True)
        first = torch.zeros(len(unique_queries), dtype=torch.long).scatter_(0, box_of.cpu(), torch.arange(len(box_of)))
        if "sam_s" not in record:  # one image embedding per image, also when POLE detects again
            self.sam.set_image(sample.rgb)
        query_masks, query_ious = self.sam.predict_boxes(found.boxes[first.to(found.boxes.device)])
        box_of = box_of.to(query_masks.device)
        confidences = found.scores.to(query_masks.device) * query_ious[box_of]
        record["sam_s"] = round(record.get("sam_s", 0) + time.perf_counter() - start, 4)
        return query_masks[box_of], confidences, (found.classes + 1).to(query_masks.device)

    def _pole_names(
        self, sample: Sample, class_ids: list[int], masks: torch.Tensor, channels: torch.Tensor, record: dict[str, Any]
    ) -> list[str]:
        """POLE on detected regions: per class, the candidate name closest to the image masked by the
        union of that class's masks (the whole image when the class name found nothing)."""
        height, width = sample.rgb.shape[:2]
        regions = torch.ones(len(class_ids), height, width, device=self.clip.device)
        for channel in channels.unique().tolist():
            regions[channel - 1] = masks[channels == channel].any(dim=0).float().to(self.clip.device)
        entries = [self.prompts.classes[c] for c in class_ids]
        choices = choose_synonyms(
            self.clip, sample.rgb, regions, entries, self.prompts.pole_template, self.options.pole_candidates
        )
        record["synonyms"] = {choice.class_name: choice.chosen for choice in choices}
        return [choice.chosen for choice in choices]

    def _exclude(
        self,
        sample: Sample,
        class_ids: list[int],
        masks: torch.Tensor,
        confidences: torch.Tensor,
        channels: torch.Tensor,
        record: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        region_classes = [class_ids[c - 1] for c in channels.tolist()]
        names = [f"mask {i} ({self.prompts.classes[c].name})" for i, c in enumerate(region_classes)]
        result = self.exclusion(sample.rgb, masks.float(), region_classes, class_ids, names, crop=True)
        record["exclusion_rule"] = result.rule
        record["exclusions"] = result.exclusions
        record["excluded"] = [
            self.prompts.classes[c].name for c, k in zip(region_classes, result.kept, strict=True) if not k
        ]
        record["exclusion_s"] = round(time.perf_counter() - start, 4)
        kept = torch.tensor(result.kept, device=masks.device)
        return masks[kept], confidences[kept], channels[kept]

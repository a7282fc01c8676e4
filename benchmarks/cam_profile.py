"""Where one CAM image's time goes, stage by stage, at real CLIP ViT-B/16 size (random weights).

    python benchmarks/cam_profile.py [--images 6] [--classes 3] [--scales 1.0] [--device auto] [--precision fp32]

Each generated 500x375 JPEG (K classes) goes through the steps ``generate --method cam`` runs,
called one by one with the labeler's own functions and timed separately (CUDA synchronised):
decode (JPEG -> RGB), views (resize + normalise), blocks 1-11 (no grad, window attention
summed), text (prompt embeddings; cached after the first image, as the labeler does), last
block forward + backward (the batched GradCAM of all classes), CAA box rule (numpy/OpenCV, per
class), CAA affinity (transition and product), upsample (bilinear to the image), background +
decode (argmax, unsure margin), PNG write (palette PNG to memory). Prints mean milliseconds per
image (the first image left out) and each step's share, and the same run's whole-labeler time
for comparison. Asserts nothing; the figures guide where speed work pays (issue #27).
"""

from __future__ import annotations

import argparse
import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pseudolabel.core.devices import autocast_dtype, resolve_device
from pseudolabel.core.images import load_rgb
from pseudolabel.core.masks import encode_mask_png
from pseudolabel.core.prompts import load_prompts
from pseudolabel.core.scoremaps import ScoreMaps, decode
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.labelers.clip_es import background_score, caa_transition, gradcam_last_block, min_max, region_box_mask
from pseudolabel.labelers.options import CamOptions
from pseudolabel.models.clip import block_forward, patch_tokens

VOC = load_prompts("voc")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Adds each named step's seconds, CUDA synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self._current: dict[str, float] = {}

    def step(self, name: str):
        clock = self

        class _Timed:
            def __enter__(self) -> None:
                _sync(clock.device)
                self.start = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                _sync(clock.device)
                clock._current[name] = clock._current.get(name, 0.0) + time.perf_counter() - self.start

        return _Timed()

    def next_image(self) -> None:
        for name, value in self._current.items():
            self.seconds[name].append(value)
        self._current = {}


def profile_image(labeler: CamLabeler, path: Path, class_ids: list[int], clock: StepClock) -> None:
    """Run one image through the CAM steps one by one, timing each."""
    cam = labeler.cam
    clip, options = cam.clip, cam.options
    with clock.step("decode"):
        rgb = load_rgb(path)
    blocks = clip.model.visual.transformer.resblocks
    weights = cam.cast_weights()
    window_start = max(0, len(blocks) - options.attention_layers)
    total = None
    names = labeler._names(class_ids)
    with clock.step("text"):
        text_features = labeler._text_features(names)
    for scale in options.scales:
        with clock.step("views"):
            images = cam.view_tensor(rgb, scale, False)
        grid = (images.shape[2] // clip.patch_size, images.shape[3] // clip.patch_size)
        with clock.step("blocks 1-11 (no grad)"), torch.no_grad(), cam._autocast():
            tokens = patch_tokens(clip.model.visual, images)
            attention_sum = torch.zeros(tokens.shape[1], tokens.shape[1], device=tokens.device)
            for index, block in enumerate(blocks[:-1]):
                tokens, attention = block_forward(block, tokens, index >= window_start, weights=weights[index])
                if attention is not None:
                    attention_sum += attention[0].float()
        with clock.step("last block fwd + bwd"), cam._autocast():
            cams, last_attention = gradcam_last_block(clip, tokens, text_features, len(class_ids), weights[-1])
            cams, last_attention = cams.float(), last_attention.float()  # as the labeler: CAA in fp32
        with clock.step("CAA affinity"):
            count = len(blocks) - 1 - window_start
            transition = caa_transition(((attention_sum + last_attention) / (count + 1))[1:, 1:])
        with clock.step("CAA box rule"):
            boxes = np.stack(
                [region_box_mask(c.reshape(grid).cpu().numpy(), options.caa_threshold).ravel() for c in cams]
            )
        with clock.step("CAA affinity"):
            cams = min_max((torch.from_numpy(boxes).to(cams.device) * cams) @ transition.T)
        with clock.step("upsample"):
            maps = F.interpolate(cams.view(1, len(class_ids), *grid), size=rgb.shape[:2], mode="bilinear")[0]
        total = maps if total is None else total + maps
    with clock.step("background + decode"):
        first = total / len(options.scales)
        scores = torch.cat([background_score(first)[None], first]).cpu().numpy()
        label_map = decode(ScoreMaps(scores, (0, *class_ids)), 0.05)
    with clock.step("PNG write"):
        io.BytesIO(encode_mask_png(label_map))
    clock.next_image()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--scales", default="1.0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (autocast, as --precision bf16)")
    args = parser.parse_args()
    device = resolve_device(args.device)

    import tempfile

    from cam import random_weights, write_images

    from pseudolabel.models.clip import create_clip

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        labels = write_images(root, args.images, args.classes, 375, 500)
        clip = create_clip("ViT-B-16-quickgelu", random_weights(), device)
        scales = tuple(float(s) for s in args.scales.split(","))
        dtype = autocast_dtype(args.precision, device)
        labeler = CamLabeler(clip, VOC, CamOptions(scales=scales), autocast_dtype=dtype)
        clock = StepClock(device)
        whole = []
        for image_id, ids in labels.items():
            path = root / "JPEGImages" / f"{image_id}.jpg"
            profile_image(labeler, path, ids, clock)
            _sync(device)
            start = time.perf_counter()
            rgb = np.asarray(Image.open(path).convert("RGB"))
            labeler(Sample(image_id, rgb, tuple(ids), None), StageRecord())
            _sync(device)
            whole.append(time.perf_counter() - start)
    threads = torch.get_num_threads()
    print(f"CAM steps per image: {args.images - 1} images after a warm-up, {args.classes} classes, scales {scales},")
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"{args.precision}, {device}, {threads} torch threads, CPU capability {capability}")
    means = {name: 1000 * float(np.mean(values[1:] or values)) for name, values in clock.seconds.items()}
    total = sum(means.values())
    for name, value in sorted(means.items(), key=lambda item: -item[1]):
        print(f"  {name:24s} {value:8.1f} ms  {100 * value / total:5.1f} %")
    print(f"  {'sum of steps':24s} {total:8.1f} ms")
    print(f"  {'CamLabeler, whole':24s} {1000 * float(np.mean(whole[1:] or whole)):8.1f} ms (labelling only)")


if __name__ == "__main__":
    main()

"""CAM throughput at real CLIP ViT-B/16 size (random weights): ours vs per-class-backward loops.

    python benchmarks/cam.py [--classes 3] [--repeats 3] [--device auto] [--height 375 --width 500]

Three ways to get the GradCAMs of K classes of one image (CAA refinement included in all):

* ours: blocks 1..11 without autograd, then one forward of the last block and one batched
  backward (input gradients only) for all K classes;
* reference loop: as the reference code runs it (pytorch-grad-cam): the image is encoded with
  autograd on and parameters requiring gradients, and each class re-runs the last block and
  back-propagates through all blocks, parameter gradients included;
* last-block loop: one forward + input-gradient backward of the last block per class.

Prints images/s, peak memory (process RSS on CPU, allocated memory on CUDA) and the largest
difference between our CAMs and the reference loop's (fp32). Asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.devices import resolve_device
from pseudolabel.labelers.clip_es import (
    CamOptions,
    ClipEsCam,
    caa_transition,
    gradcam_last_block,
    min_max,
    refine_with_affinity,
)
from pseudolabel.models.clip import ClipModel, block_forward, build_clip, patch_tokens, pooled_patch_features
from pseudolabel.prompts import load_prompts


def probabilities(clip: ClipModel, out: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    features = F.normalize(pooled_patch_features(clip.model.visual, out), dim=-1)
    return (clip.model.logit_scale.exp() * features @ text_features.T).softmax(dim=-1)[0]


def gradcam_from(tokens: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    return torch.relu(tokens[0, 1:].detach() @ gradient[0, 1:].mean(dim=0))


def refine(cams: torch.Tensor, attention: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return refine_with_affinity(min_max(cams), caa_transition(attention[1:, 1:]), grid, 0.4)


def ours(cam: ClipEsCam, rgb: np.ndarray, text_features: torch.Tensor, count: int) -> torch.Tensor:
    """The library path: what ``generate`` runs."""
    return cam.class_maps(cam.encode_views(rgb), text_features, count, rgb.shape[:2])


def ours_gradcams(cam: ClipEsCam, rgb: np.ndarray, text_features: torch.Tensor, count: int) -> torch.Tensor:
    """Our GradCAMs before CAA [K, N] (untimed, for the comparison)."""
    return gradcam_last_block(cam.clip, cam.encode_views(rgb)[0].tokens, text_features, count)[0]


def reference_loop(cam: ClipEsCam, rgb: np.ndarray, text_features: torch.Tensor, count: int) -> torch.Tensor:
    clip = cam.clip
    visual = clip.model.visual
    blocks = visual.transformer.resblocks
    visual.requires_grad_(True)
    image = cam.view_tensor(rgb, 1.0, False)
    grid = (image.shape[2] // clip.patch_size, image.shape[3] // clip.patch_size)
    tokens = patch_tokens(visual, image)
    attention_sum = 0
    for index, block in enumerate(blocks[:-1]):
        tokens, attention = block_forward(block, tokens, need_attention=index >= len(blocks) - 8)
        if attention is not None:
            attention_sum = attention_sum + attention[0].detach()
    tokens.retain_grad()
    cams = []
    for target in range(count):
        out, last_attention = block_forward(blocks[-1], tokens, need_attention=True)
        visual.zero_grad(set_to_none=True)
        tokens.grad = None
        probabilities(clip, out, text_features)[target].backward(retain_graph=True)
        cams.append(gradcam_from(tokens, tokens.grad))
    visual.requires_grad_(False)
    attention = (attention_sum + last_attention.detach()[0]) / 8
    maps = refine(torch.stack(cams), attention, grid)
    resized = F.interpolate(maps.view(1, count, *grid), size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]
    return min_max(torch.stack(cams)), resized


def last_block_loop(cam: ClipEsCam, rgb: np.ndarray, text_features: torch.Tensor, count: int) -> torch.Tensor:
    clip = cam.clip
    view = cam.encode_views(rgb)[0]
    cams = []
    for target in range(count):
        inputs = view.tokens.detach().requires_grad_(True)
        with torch.enable_grad():
            out, last_attention = block_forward(
                clip.model.visual.transformer.resblocks[-1], inputs, need_attention=True
            )
            (gradient,) = torch.autograd.grad(probabilities(clip, out, text_features)[target], inputs)
        cams.append(gradcam_from(inputs, gradient))
    attention = (view.attention_sum + last_attention.detach()[0]) / (view.attention_count + 1)
    maps = refine(torch.stack(cams), attention, view.grid)
    resized = F.interpolate(maps.view(1, count, *view.grid), size=rgb.shape[:2], mode="bilinear", align_corners=False)[
        0
    ]
    return min_max(torch.stack(cams)), resized


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: Callable, repeats: int, device: torch.device, *args: object) -> tuple[float, Any, float]:
    result = method(*args)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = method(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats / (time.perf_counter() - start), result, peak_memory_mb(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast (CUDA)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    clip = build_clip("ViT-B-16-quickgelu", "random", device)
    prompts = load_prompts("voc")
    names = [entry.display for entry in prompts.classes[1 : 1 + args.classes]]
    texts = [prompts.cam_template.format(n) for n in names] + [
        prompts.cam_template.format(w) for w in prompts.background_words
    ]
    text_features = clip.encode_texts(texts)
    rgb = np.random.default_rng(0).integers(0, 255, size=(args.height, args.width, 3), dtype=np.uint8)
    cam = ClipEsCam(clip, CamOptions())
    print(f"device {device}, image {args.width}x{args.height}, {args.classes} classes, ViT-B/16 random weights")
    rate, ours_maps, memory = measure(ours, args.repeats, device, cam, rgb, text_features, args.classes)
    print(f"ours (one batched backward, last block): {rate:.2f} img/s, peak memory {memory:.0f} MB")
    ours_raw = ours_gradcams(cam, rgb, text_features, args.classes)
    if args.bf16 and device.type == "cuda":
        fast = ClipEsCam(clip, CamOptions(), torch.bfloat16)
        rate_bf16, _, memory_bf16 = measure(ours, args.repeats, device, fast, rgb, text_features, args.classes)
        print(f"ours, bf16 autocast: {rate_bf16:.2f} img/s, peak memory {memory_bf16:.0f} MB")
    for label, method in (
        ("reference loop (per class, all blocks)", reference_loop),
        ("last-block loop", last_block_loop),
    ):
        loop_rate, loop_maps, loop_memory = measure(method, args.repeats, device, cam, rgb, text_features, args.classes)
        gradcam_difference = (loop_maps[0] - ours_raw).abs().max().item()
        refined_difference = (loop_maps[1] - ours_maps).abs().max().item()
        print(
            f"{label}: {loop_rate:.2f} img/s, peak memory {loop_memory:.0f} MB; ours is {rate / loop_rate:.2f}x "
            f"faster; max |GradCAM difference| {gradcam_difference:.1e}, after CAA {refined_difference:.1e}"
        )
    print(
        "(with random weights the attention is nearly uniform, so CAA maps are nearly flat and their min-max "
        "scaling magnifies float rounding; the GradCAM difference is the like-for-like figure)"
    )


if __name__ == "__main__":
    main()

"""CAM speed at real CLIP ViT-B/16 size (random weights), beside the published CLIP-ES code.

    python benchmarks/cam.py [--images 4] [--classes 3] [--device auto] [--bf16] [--clip-es PATH]

All timings use the same generated 500x375 images, K classes each, and the same random weights
(rounded to fp16, as OpenAI's released checkpoint is):

* ours: ``CamLabeler`` per image (encode, one batched GradCAM of all classes, CAA, background);
* generate: the whole command per image (decode, label, PNG + manifest) with
  ``--num-workers 0`` and ``2``, model loading left out;
* published: with ``--clip-es`` naming a checkout of github.com/linyq2117/CLIP-ES, its own
  ``perform`` loop from ``generate_cams_voc12.py`` on this device (the first 11 blocks under
  no_grad, then one pytorch-grad-cam call per class through the last block); it needs the
  packages that code imports (ttach, ftfy, regex, lxml). Its maps are compared with ours too.

Prints seconds per image (after one warm-up image) and peak memory. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.datasets.base import Sample
from pseudolabel.devices import resolve_device
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.models.clip import create_clip
from pseudolabel.prompts import load_prompts

VOC = load_prompts("voc")


def random_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu")
    return {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def write_images(root: Path, count: int, classes: int, height: int, width: int) -> dict[str, list[int]]:
    """A VOC folder of generated photos-to-be with Annotations XML; returns id -> class ids."""
    for folder in ("JPEGImages", "Annotations", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = {}
    for index in range(count):
        image_id = f"bench_{index:03d}"
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for _ in range(classes):
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            pixels[top : top + height // 3, left : left + width // 3] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        ids = sorted(int(c) for c in rng.choice(np.arange(1, 21), classes, replace=False))
        objects = "".join(f"<object><name>{VOC.classes[c].name}</name></object>" for c in ids)
        size = f"<size><width>{width}</width><height>{height}</height></size>"
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{size}{objects}</annotation>")
        labels[image_id] = ids
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(labels) + "\n")
    return labels


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(weights, root: Path, labels: dict[str, list[int]], device, bf16: bool) -> tuple[float, dict]:
    clip = create_clip("ViT-B-16-quickgelu", weights, device)
    labeler = CamLabeler(clip, VOC, autocast_dtype=torch.bfloat16 if bf16 else None)
    maps, seconds = {}, []
    for image_id, ids in labels.items():
        rgb = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        sync(device)
        start = time.perf_counter()
        result, _ = labeler(Sample(image_id, rgb, tuple(ids), None))
        sync(device)
        seconds.append(time.perf_counter() - start)
        maps[image_id] = result.scores[1:]
    return float(np.mean(seconds[1:] or seconds)), maps


def time_generate(weights, root: Path, count: int, device, workers: int) -> float:
    """Seconds per image of the whole command: (run over all images - run over one) / (count - 1),
    so model loading and the first image's text encoding are left out."""
    with tempfile.TemporaryDirectory() as scratch:
        weights_path = Path(scratch) / "clip.pt"
        torch.save(weights, weights_path)
        args = ["generate", "--dataset", "voc", "--root", str(root), "--out", str(Path(scratch) / "out")]
        args += ["--clip-model", "ViT-B-16-quickgelu", "--clip-weights", str(weights_path), "--device", str(device)]
        args += ["--num-workers", str(workers), "--overwrite"]
        seconds = []
        for limit in (1, count):
            start = time.perf_counter()
            result = CliRunner().invoke(app, [*args, "--limit", str(limit)])
            if result.exit_code != 0:
                raise SystemExit(result.output)
            seconds.append(time.perf_counter() - start)
        return (seconds[1] - seconds[0]) / (count - 1)


def time_published(clip_es: Path, weights, root: Path, labels: dict[str, list[int]], device) -> tuple[float, dict]:
    """The published ``perform`` loop, its source run unchanged except the device it picks."""
    import packaging.version

    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
    sys.path.insert(0, str(clip_es))
    from clip.model import build_model  # the published repository's own CLIP

    model = build_model({k: v.clone() for k, v in weights.items()}).eval().to(device)
    if device.type == "cpu":
        model.float()
    source = (clip_es / "generate_cams_voc12.py").read_text()
    source = source.replace('device_id = "cuda:{}".format(process_id % n_gpus)', f'device_id = "{device}"')
    namespace = {"__name__": "clip_es_generate", "device": str(device)}
    cwd = os.getcwd()
    os.chdir(clip_es)
    try:
        exec(compile(source, "generate_cams_voc12.py", "exec"), namespace)
        namespace["device"] = str(device)
        background = namespace["zeroshot_classifier"](namespace["BACKGROUND_CATEGORY"], ["a clean origami {}."], model)
        foreground = namespace["zeroshot_classifier"](namespace["new_class_names"], ["a clean origami {}."], model)
        cam = namespace["GradCAM"](
            model=model,
            target_layers=[model.visual.transformer.resblocks[-1].ln_1],
            reshape_transform=namespace["reshape_transform"],
        )
        with tempfile.TemporaryDirectory() as out:
            args = types.SimpleNamespace(img_root=str(root / "JPEGImages"), cam_out_dir=out)
            seconds = []
            for image_id in labels:
                sync(device)
                start = time.perf_counter()
                namespace["perform"](0, [[f"{image_id}.jpg"]], args, model, background, foreground, cam)
                sync(device)
                seconds.append(time.perf_counter() - start)
            maps = {}
            for image_id in labels:
                saved = np.load(Path(out) / f"{image_id}.npy", allow_pickle=True).item()
                order = np.argsort(saved["keys"])  # the published code keeps XML order; ours sorts ids
                maps[image_id] = saved["attn_highres"][order].astype(np.float32)
    finally:
        os.chdir(cwd)
    return float(np.mean(seconds[1:] or seconds)), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="ours under bf16 autocast (CUDA)")
    parser.add_argument("--clip-es", type=Path, help="a checkout of the published CLIP-ES repository")
    args = parser.parse_args()
    device = resolve_device(args.device)
    weights = random_weights()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "VOC2012"
        labels = write_images(root, args.images, args.classes, args.height, args.width)
        print(f"device {device}, torch threads {torch.get_num_threads()}, {args.images} images "
              f"{args.width}x{args.height}, {args.classes} classes, ViT-B/16 random weights")  # fmt: skip
        ours, our_maps = time_ours(weights, root, labels, device, args.bf16)
        print(f"ours (CamLabeler per image{', bf16' if args.bf16 else ''}): {ours:.3f} s/image, "
              f"peak {peak_memory_mb(device):.0f} MB")  # fmt: skip
        for workers in (0, 2):
            print(f"generate --num-workers {workers}: {time_generate(weights, root, args.images, device, workers):.3f}"
                  " s/image (decode, label, write)")  # fmt: skip
        if args.clip_es is not None:
            published, published_maps = time_published(args.clip_es, weights, root, labels, device)
            difference = max(np.abs(our_maps[i] - published_maps[i]).max() for i in labels)
            print(f"published CLIP-ES perform loop: {published:.3f} s/image; "
                  f"largest |ours - published| over the saved maps {difference:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()

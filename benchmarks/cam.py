"""CAM speed at real CLIP ViT-B/16 size (random weights), beside the published CLIP-ES code.

    python benchmarks/cam.py [--images 4] [--classes 3] [--rounds 2] [--device auto] [--precisions fp32,bf16]
                             [--clip-es PATH] [--skip-generate]

All timings use the same generated 500x375 images, K classes each, and the same random weights
(rounded to fp16, as OpenAI's released checkpoint is):

* ours: ``CamLabeler`` per image (encode, GradCAM of all classes from one forward, CAA, background;
  the class prompts encoded before timing, as the published script does),
  once per ``--precisions`` entry (fp32, bf16 autocast on CUDA or a CPU with native bf16); bf16's
  maps are compared with fp32's (Pearson correlation per map, and the share of pixels whose
  label, argmax over background and classes, is the same);
* generate: the whole command per image (decode, label, PNG + manifest) with
  ``--num-workers 0`` and ``2``, model loading left out;
* published: with ``--clip-es`` naming a checkout of github.com/linyq2117/CLIP-ES, its own
  ``perform`` loop from ``generate_cams_voc12.py`` on this device (the first 11 blocks under
  no_grad, then one pytorch-grad-cam call per class through the last block); it needs the
  packages that code imports (ttach, ftfy, regex, lxml). Its maps are compared with ours too.

Ours and the published loop run in turn, ``--rounds`` times over the same images (models built
once, before timing), so the ratio printed at the end compares them under the same machine load.
Prints seconds per image (after one warm-up image per round), the ratio, and peak memory. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
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
from pseudolabel.core.devices import autocast_dtype, resolve_device, resolve_precision
from pseudolabel.core.prompts import load_prompts
from pseudolabel.core.stage_record import StageRecord
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.models.clip import create_clip

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


def time_ours(labeler: CamLabeler, root: Path, labels: dict[str, list[int]], device) -> tuple[float, dict]:
    """Seconds per image of ``CamLabeler`` (after a warm-up image) and its CAMs [K, H, W] by id."""
    maps, seconds = {}, []
    for image_id, ids in labels.items():
        rgb = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        sync(device)
        start = time.perf_counter()
        result = labeler(Sample(image_id, rgb, tuple(ids), None), StageRecord())
        sync(device)
        seconds.append(time.perf_counter() - start)
        maps[image_id] = result.scores[1:]
    return float(np.mean(seconds[1:] or seconds)), maps


def map_agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> str:
    """How close ``other``'s CAMs [K, H, W] are to ``reference``'s: Pearson correlation per class
    map (median, min) and the share of pixels labelled alike (argmax over (1 - max CAM) and the
    CAMs, CLIP-ES's background)."""
    correlations, same, close, pixels = [], 0, 0, 0
    for image_id, maps in reference.items():
        for a, b in zip(maps, other[image_id], strict=True):
            correlations.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
        scores = [np.concatenate([1 - m.max(axis=0, keepdims=True), m]) for m in (maps, other[image_id])]
        same += int(np.sum(scores[0].argmax(axis=0) == scores[1].argmax(axis=0)))
        top_two = np.sort(scores[0], axis=0)[-2:]
        close += int(np.sum(top_two[1] - top_two[0] < 0.01))
        pixels += maps[0].size
    return (f"bf16 against fp32: map correlation median {np.median(correlations):.5f}, min {min(correlations):.5f}; "
            f"labels equal on {same / pixels:.2%} of pixels ({close / pixels:.1%} of fp32's pixels have their two "
            "best scores within 0.01)")  # fmt: skip


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


class Published:
    """The published ``perform`` loop of CLIP-ES, its source run unchanged except the device it picks;
    model, text features and the GradCAM object are built once, as its script does."""

    def __init__(self, clip_es: Path, weights, device) -> None:
        import packaging.version

        sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
        sys.path.insert(0, str(clip_es))
        from clip.model import build_model  # the published repository's own CLIP

        self.clip_es, self.device = clip_es, device
        self.model = build_model({k: v.clone() for k, v in weights.items()}).eval().to(device)
        if device.type == "cpu":
            self.model.float()
        source = (clip_es / "generate_cams_voc12.py").read_text()
        source = source.replace('device_id = "cuda:{}".format(process_id % n_gpus)', f'device_id = "{device}"')
        self.namespace = {"__name__": "clip_es_generate", "device": str(device)}
        with self._inside():
            exec(compile(source, "generate_cams_voc12.py", "exec"), self.namespace)
            self.namespace["device"] = str(device)
            classifier = self.namespace["zeroshot_classifier"]
            self.background = classifier(self.namespace["BACKGROUND_CATEGORY"], ["a clean origami {}."], self.model)
            self.foreground = classifier(self.namespace["new_class_names"], ["a clean origami {}."], self.model)
            self.cam = self.namespace["GradCAM"](
                model=self.model,
                target_layers=[self.model.visual.transformer.resblocks[-1].ln_1],
                reshape_transform=self.namespace["reshape_transform"],
            )

    @contextlib.contextmanager
    def _inside(self):
        cwd = os.getcwd()
        os.chdir(self.clip_es)
        try:
            yield
        finally:
            os.chdir(cwd)

    def time(self, root: Path, labels: dict[str, list[int]]) -> tuple[float, dict]:
        """Seconds per image of ``perform`` (after a warm-up image) and its saved maps [K, H, W] by id."""
        perform, device = self.namespace["perform"], self.device
        with self._inside(), tempfile.TemporaryDirectory() as out:
            args = types.SimpleNamespace(img_root=str(root / "JPEGImages"), cam_out_dir=out)
            seconds = []
            for image_id in labels:
                sync(device)
                start = time.perf_counter()
                perform(0, [[f"{image_id}.jpg"]], args, self.model, self.background, self.foreground, self.cam)
                sync(device)
                seconds.append(time.perf_counter() - start)
            maps = {}
            for image_id in labels:
                saved = np.load(Path(out) / f"{image_id}.npy", allow_pickle=True).item()
                order = np.argsort(saved["keys"])  # the published code keeps XML order; ours sorts ids
                maps[image_id] = saved["attn_highres"][order].astype(np.float32)
        return float(np.mean(seconds[1:] or seconds)), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="fp32", help="ours at each of these: fp32, bf16 (comma-separated)")
    parser.add_argument("--clip-es", type=Path, help="a checkout of the published CLIP-ES repository")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of ours and the published loop")
    parser.add_argument("--skip-generate", action="store_true", help="leave out the whole-command timings")
    args = parser.parse_args()
    device = resolve_device(args.device)
    weights = random_weights()
    precisions = args.precisions.split(",")
    clip = create_clip("ViT-B-16-quickgelu", weights, device)
    labelers = {name: CamLabeler(clip, VOC, autocast_dtype=autocast_dtype(name, device)) for name in precisions}
    # every class's prompt and the background words encoded before timing, as the published script
    # encodes them (zeroshot_classifier) before its loop; the labeler caches them on the shared CLIP
    every_class = VOC.prompt_names(list(range(1, len(VOC.classes))), "fuse") + list(VOC.background_words)
    clip.encode_texts([VOC.cam_template.format(name) for name in every_class])
    published = Published(args.clip_es, weights, device) if args.clip_es is not None else None
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "VOC2012"
        labels = write_images(root, args.images, args.classes, args.height, args.width)
        print(f"device {device}, torch threads {torch.get_num_threads()}, {args.images} images "
              f"{args.width}x{args.height}, {args.classes} classes, ViT-B/16 random weights")  # fmt: skip
        ours_seconds: dict[str, list[float]] = {name: [] for name in precisions}
        our_maps: dict[str, dict] = {}
        published_seconds = []
        for round_index in range(1, args.rounds + 1):  # interleaved, so drift on the machine hits all alike
            line = f"round {round_index}:"
            for name, labeler in labelers.items():
                seconds, our_maps[name] = time_ours(labeler, root, labels, device)
                ours_seconds[name].append(seconds)
                line += f" ours {name} {seconds:.3f} s/image,"
            if published is not None:
                seconds, published_maps = published.time(root, labels)
                published_seconds.append(seconds)
                line += f" published CLIP-ES perform loop {seconds:.3f} s/image"
            print(line.rstrip(","))
        for name in precisions:
            print(f"ours {name}: {np.mean(ours_seconds[name]):.3f} s/image")
        print(f"peak {peak_memory_mb(device):.0f} MB (every model here)")
        if published is not None:
            reference = np.mean(published_seconds)
            print(f"published: {reference:.3f} s/image")
            for name in precisions:
                print(f"ours {name} runs at {reference / np.mean(ours_seconds[name]):.2f}x the published loop's speed")
            fp32_maps = our_maps.get("fp32")
            if fp32_maps is not None:
                difference = max(np.abs(fp32_maps[i] - published_maps[i]).max() for i in labels)
                print(f"largest |ours fp32 - published| in the maps {difference:.4f}")
        if "fp32" in our_maps and "bf16" in our_maps:
            print(map_agreement(our_maps["fp32"], our_maps["bf16"]))
        auto = resolve_precision("auto", device)
        for workers in () if args.skip_generate else (0, 2):
            seconds = time_generate(weights, root, args.images, device, workers)
            print(f"generate --num-workers {workers} --precision auto ({auto} here): {seconds:.3f} s/image "
                  "(decode, label, write)")  # fmt: skip


if __name__ == "__main__":
    main()

"""CAM speed at real CLIP ViT-B/16 size (random weights), beside the published CLIP-ES code.

    python benchmarks/cam.py [--images 4] [--classes 3] [--rounds 2] [--device auto] [--precisions fp32,bf16]
                             [--clip-es PATH] [--skip-generate] [--runs R]

All timings use the same generated 500x375 images, K classes each, and the same random weights
(rounded to fp16, as OpenAI's released checkpoint is):

* ours: per image what ``generate`` does with it: decode the JPEG, ``CamLabeler`` (encode, GradCAM
  of all classes from one forward, CAA, background), the unsure margin and argmax, and the palette
  PNG written; the class prompts are encoded before timing, as the published script encodes them
  before its loop. Once per ``--precisions`` entry (fp32, bf16 autocast on CUDA or a CPU with
  native bf16); bf16's maps are compared with fp32's (Pearson correlation per map, and the share of
  pixels whose label, argmax over background and classes, is the same);
* generate: the whole command per image (decode, label, PNG + manifest) with
  ``--num-workers 0`` and ``2``, model loading left out;
* whole runs (``--runs R``): R rounds, each of the published loop over every image and of ``generate``'s
  local run over the same images (decode, label, PNG + manifest), in this process (``--num-workers 0``,
  the default) and, on a CPU of several cores, with ``--num-workers <cores>`` (one-thread labelling
  processes), taking turns round by round; models built once before timing;
* published: with ``--clip-es`` naming a checkout of github.com/linyq2117/CLIP-ES, its own
  ``perform`` loop from ``generate_cams_voc12.py`` on this device, one image per call (read the XML
  and the JPEG, the first 11 blocks under no_grad, one pytorch-grad-cam call per class through the
  last block, CAA, the ``.npy`` written); it needs the packages that code imports (ttach, ftfy,
  regex, lxml). Its maps are compared with ours too.

Ours and the published loop take turns image by image (the order swapped every round), ``--rounds``
times over the same images, models built once before timing: a shared machine's load changes over
seconds, and taking turns per image lets it weigh on both alike. Prints seconds per image (the
first round's first image left out as warm-up), the ratio of the means and the median of the
per-image ratios, and peak memory. Asserts nothing.
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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import open_clip
import torch
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.devices import (
    LocalWorkers,
    autocast_dtype,
    local_workers,
    resolve_device,
    resolve_precision,
    usable_cores,
)
from pseudolabel.core.images import load_rgb
from pseudolabel.core.masks import write_mask
from pseudolabel.core.prompts import load_prompts
from pseudolabel.datasets.base import Sample
from pseudolabel.labelers.cam import CamLabeler
from pseudolabel.models.clip import create_clip
from pseudolabel.registry import DATASETS
from pseudolabel.runner.loop import RunOptions, run_images
from pseudolabel.runner.per_image import ScoreRefineDecode

VOC = load_prompts("voc")
T = TypeVar("T")
UNSURE_MARGIN = 0.05  # generate's default --unsure-margin


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


def run_ours(labeler: CamLabeler, root: Path, image_id: str, ids: list[int], out: Path) -> np.ndarray:
    """``generate``'s work on one image (decode, scores, unsure margin, argmax, palette PNG);
    returns the CAMs [K, H, W]."""
    rgb = load_rgb(root / "JPEGImages" / f"{image_id}.jpg")
    result = ScoreRefineDecode(labeler, UNSURE_MARGIN)(Sample(image_id, rgb, tuple(ids), None))
    write_mask(out / f"{image_id}.png", result.label_map)
    return result.scores.scores[1:]


def timed(device: torch.device, work: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``work`` takes (CUDA synchronised at both ends), and what it returned."""
    sync(device)
    start = time.perf_counter()
    value = work()
    sync(device)
    return time.perf_counter() - start, value


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


def time_run(labeler: CamLabeler, root: Path, out: Path, workers: LocalWorkers) -> float:
    """Seconds per image of ``generate``'s local run over the VOC folder at ``root`` (decode, label
    with ``workers``, PNG and manifest written), the labeler already built."""
    dataset = DATASETS["voc"](root, "train")
    options = RunOptions(out, None, True, None, (0, 1), workers.processes, workers.label_in_workers)
    start = time.perf_counter()
    summary = run_images(dataset, lambda: ScoreRefineDecode(labeler, UNSURE_MARGIN), options)
    return (time.perf_counter() - start) / summary.done


def compare_whole_runs(labelers: dict[str, CamLabeler], published: Published, root: Path, out: Path, device,
                       rounds: int) -> None:  # fmt: skip
    """Print seconds per image of whole runs over the images, taking turns round by round: the
    published loop, and each labeler in this process and (on a CPU of several cores) in one
    one-thread labelling process per core."""
    image_ids = sorted(path.stem for path in (root / "JPEGImages").glob("*.jpg"))
    cores = usable_cores()
    workers = local_workers(cores, device) if device.type == "cpu" and cores > 1 else None
    runs: dict[str, Callable[[], float]] = {"published": lambda: published_run(published, root, image_ids, out)}
    for name, labeler in labelers.items():
        runs[f"ours {name}, this process"] = partial(time_run, labeler, root, out / name, LocalWorkers(0))
        if workers is not None:
            runs[f"ours {name}, --num-workers {cores} (one-thread labelling processes)"] = partial(
                time_run, labeler, root, out / f"{name}-workers", workers
            )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds):
        for name in runs if round_index % 2 == 0 else list(runs)[::-1]:
            seconds[name].append(runs[name]())
    reference = np.array(seconds.pop("published"))
    print(f"whole runs over {len(image_ids)} images, {rounds} rounds taking turns: published {reference.mean():.3f} "
          "s/image")  # fmt: skip
    for name, values in seconds.items():
        ratios = reference / np.array(values)
        print(f"whole run {name}: {np.mean(values):.3f} s/image, {reference.mean() / np.mean(values):.2f}x the "
              f"published loop (per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


def published_run(published: Published, root: Path, image_ids: list[str], out: Path) -> float:
    """Seconds per image of the published loop over ``image_ids``."""
    start = time.perf_counter()
    for image_id in image_ids:
        published.run(root, image_id, out)
    return (time.perf_counter() - start) / len(image_ids)


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

    def run(self, root: Path, image_id: str, out: Path) -> None:
        """``perform`` on one image: reads its XML and JPEG under ``root``, writes ``out/<id>.npy``."""
        args = types.SimpleNamespace(img_root=str(root / "JPEGImages"), cam_out_dir=str(out))
        with self._inside():
            self.namespace["perform"](0, [[f"{image_id}.jpg"]], args, self.model, self.background, self.foreground,
                                      self.cam)  # fmt: skip

    @staticmethod
    def maps(out: Path, image_id: str) -> np.ndarray:
        """The saved CAMs [K, H, W] of an image, in class-id order (the published code keeps XML order)."""
        saved = np.load(out / f"{image_id}.npy", allow_pickle=True).item()
        return saved["attn_highres"][np.argsort(saved["keys"])].astype(np.float32)


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
    parser.add_argument("--runs", type=int, default=0, help="rounds of whole runs beside the published loop's")
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
        seconds: dict[str, list[float]] = {name: [] for name in [*labelers, "published"]}
        our_maps: dict[str, dict[str, np.ndarray]] = {name: {} for name in labelers}
        published_maps: dict[str, np.ndarray] = {}
        out = Path(scratch) / "out"
        out.mkdir()
        turns = [*labelers, "published"] if published is not None else [*labelers]
        for round_index in range(args.rounds):
            for image_id, ids in labels.items():
                for name in turns if round_index % 2 == 0 else turns[::-1]:
                    if name == "published":
                        took, _ = timed(device, partial(published.run, root, image_id, out))
                        published_maps[image_id] = Published.maps(out, image_id)
                    else:
                        took, our_maps[name][image_id] = timed(
                            device, partial(run_ours, labelers[name], root, image_id, ids, out)
                        )
                    seconds[name].append(took)
        for name in seconds:
            seconds[name] = seconds[name][1:]  # the first image of the first round warms up
        for name in precisions:
            print(f"ours {name}: {np.mean(seconds[name]):.3f} s/image (decode, label, PNG)")
        print(f"peak {peak_memory_mb(device):.0f} MB (every model here)")
        if published is not None:
            reference = np.array(seconds["published"])
            print(f"published: {reference.mean():.3f} s/image (XML, decode, label, .npy)")
            for name in precisions:
                ratios = reference / np.array(seconds[name])
                print(f"ours {name} runs at {reference.mean() / np.mean(seconds[name]):.2f}x the published loop's "
                      f"speed (median of per-image ratios {np.median(ratios):.2f}x)")  # fmt: skip
            if "fp32" in our_maps:
                difference = max(np.abs(our_maps["fp32"][i] - published_maps[i]).max() for i in labels)
                print(f"largest |ours fp32 - published| in the maps {difference:.4f}")
        if "fp32" in our_maps and "bf16" in our_maps:
            print(map_agreement(our_maps["fp32"], our_maps["bf16"]))
        if published is not None and args.runs:
            compare_whole_runs(labelers, published, root, out, device, args.runs)
        auto = resolve_precision("auto", device)
        for workers in () if args.skip_generate else (0, 2):
            seconds = time_generate(weights, root, args.images, device, workers)
            print(f"generate --num-workers {workers} --precision auto ({auto} here): {seconds:.3f} s/image "
                  "(decode, label, write)")  # fmt: skip


if __name__ == "__main__":
    main()

"""One table of every stage's speed and memory at real model sizes (random weights).

    python benchmarks/run_all.py [--device auto|cpu|cuda] [--images N] [--only cam,crf,...] [--bf16]
                                 [--clip-es PATH]

Each stage is the real command (``pseudolabel generate`` / ``refine`` / the trainer step) run in
its own process on the same generated VOC-size images (500x375, 2 labels each):

* cam, cam-pole: CLIP-ES CAMs on ViT-B/16 (POLE: 3 names per class); cam-batch4, cam-batch8: cam
  with ``--batch-size 4`` / ``8`` (the images are all 500x375, so a batch's views run as one
  forward; give ``--images`` of 16 or more for two batches);
* grounded-sam-vit_b, grounded-sam-vit_h, grounded-sam-hq_vit_h, grounded-sam-sam2.1_hiera_l:
  Grounding DINO Swin-T + a SAM (SAM, HQ-SAM, SAM 2.1), at most 8 boxes per image
  (``--max-detections 8``: random weights put a box everywhere; real VOC images have 2-3 objects);
  grounded-sam-vit_b-batch4, -batch8: with ``--batch-size 4`` / ``8`` (Grounding DINO's backbone and
  SAM's encoder over the batch);
* grounded-sam-mm-gdino-t, grounded-sam-owlv2-b, grounded-sam-owlv2-l: the same with MM-Grounding-DINO
  Swin-T or OWLv2 B/16 or L/14 as the detector and SAM ViT-B;
* sam3: SAM 3 (848M parameters, 1008 px) on each image's 2 class names in one batch;
* crf, sam-points, sam-auto: ``refine`` of the cam stage's masks (SAM ViT-B); sam-points-hq_vit_h,
  sam-points-sam2.1_hiera_l the same points rule with HQ-SAM ViT-H and SAM 2.1 Hiera-L
  (SAM 2.1 rows need Meta's ``sam2`` package); sam-points-compile: sam-points with ``--compile``
  (its compile time is in the first image, which the rate leaves out, and in wall);
* cam-12mp: one 4000x3000 photo through ``generate`` with the default ``--max-side``;
* deeplab-train: ``benchmarks/train_seg.py`` (DeepLabV2-ResNet101, batch 10, 321 px, MSC);
* ray-1-worker, ray-2-workers: the cam stage with ``--engine ray`` on a local Ray instance;
* clip-es-published-Kc, cam-labeler-Kc (and cam-labeler-bf16-Kc with ``--bf16``) for K = 1, 2 and 3
  classes per image, with ``--clip-es`` naming a checkout of github.com/linyq2117/CLIP-ES:
  ``benchmarks/cam.py`` on images of the same size, the published ``perform`` loop and ours taking
  turns image by image, twice over, in one process per K (each from the JPEG to its written file:
  the published ``.npy``, our palette PNG); the note gives each of ours as a multiple of the
  published loop's speed. Then whole runs over the images, taking turns round by round, twice:
  clip-es-published-run-Kc, cam-run-Kc (``generate``'s run in one process, its default) and
  cam-workers-Kc (on a CPU: ``--num-workers <cores>``, one one-thread labelling process per core),
  with ``-bf16`` twins.

Every model stage runs with ``--precision fp32``; with ``--bf16`` each of cam, grounded-sam-vit_b,
sam-points and deeplab-train also runs with ``--precision bf16`` (a ``-bf16`` row beside it, same
images, same run).

images/s comes from the manifest's per-image seconds (decode + label + batch share), leaving the
first image out as warm-up; for stages whose images run side by side (crf in every core's
process, Ray actors) it is (N - 1) / (wall of N images - wall of 1 image, the quicker of two runs), which leaves out
process start, Ray's start and model building (nan where noise made N images no slower than 1).
wall is the whole command of N images. Peak memory is the process's peak RSS on the CPU (Ray actors'
and worker processes' not included), the largest CUDA allocation on a GPU. Prints the table; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cam import write_images
from PIL import Image

HERE = Path(__file__).resolve().parent
PEAK_WRAPPER = """
import atexit, json, resource, sys
report_path = sys.argv.pop(1)

def report():
    cuda = None
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.max_memory_allocated() / 2**20
    except Exception:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(report_path, "w") as file:
        json.dump({"rss_mb": rss, "cuda_mb": cuda}, file)

atexit.register(report)
sys.argv[0] = "pseudolabel"
from pseudolabel.cli import main
main()
"""
SIDE_BY_SIDE = ("crf", "ray-1-worker", "ray-2-workers")
"""Stages whose images are labelled in parallel processes: their rate comes from wall times."""
RANDOM_MODELS = ["--clip-weights", "random", "--detector-weights", "random", "--sam-checkpoint", "random"]


def run_command(args: list[str], scratch: Path) -> tuple[float, float]:
    """Run ``pseudolabel ARGS`` in a fresh process: (wall seconds, peak memory MB)."""
    report = scratch / "peak.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(report), *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"pseudolabel {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak = json.loads(report.read_text())
    return wall, peak["cuda_mb"] if peak["cuda_mb"] is not None else peak["rss_mb"]


def manifest_rate(out: Path) -> tuple[float, int]:
    """(images/s after the first image, images) from the per-image seconds of ``out``'s manifest
    (a single image counts, warm-up included)."""
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    seconds = [r.get("load_s", 0) + r.get("label_s", 0) + r.get("batch_s", 0) for r in ok[1:] or ok]
    return (len(seconds) / sum(seconds) if seconds and sum(seconds) else float("nan")), len(ok)


BF16_STAGES = ("cam", "grounded-sam-vit_b", "sam-points")
"""Stages that get a ``-bf16`` row with ``--bf16`` (and deeplab-train)."""


def stage_commands(voc: Path, big: Path, scratch: Path, device: str) -> dict[str, list[str]]:
    """Each pipeline stage's command line (refine stages read the cam stage's masks), fp32, and
    a ``-bf16`` twin of each of :data:`BF16_STAGES`."""
    common = ["--dataset", "voc", "--root", str(voc), "--device", device, "--overwrite", "--precision", "fp32"]
    cam = ["generate", *common, "--method", "cam", *RANDOM_MODELS[:2]]
    grounded = ["generate", *common, "--method", "grounded-sam", *RANDOM_MODELS, "--max-detections", "8"]
    refine = ["refine", *common, "--masks", str(scratch / "cam")]
    commands = {
        "cam": [*cam, "--out", str(scratch / "cam")],
        "cam-batch4": [*cam, "--batch-size", "4", "--out", str(scratch / "cam-batch4")],
        "cam-batch8": [*cam, "--batch-size", "8", "--out", str(scratch / "cam-batch8")],
        "cam-pole": [*cam, "--synonyms", "pole", "--out", str(scratch / "cam-pole")],
        "grounded-sam-vit_b": [*grounded, "--sam", "vit_b", "--out", str(scratch / "gsam-b")],
        "grounded-sam-vit_b-batch4": [*grounded, "--sam", "vit_b", "--batch-size", "4",
                                      "--out", str(scratch / "gsam-b-batch4")],
        "grounded-sam-vit_b-batch8": [*grounded, "--sam", "vit_b", "--batch-size", "8",
                                      "--out", str(scratch / "gsam-b-batch8")],
        "grounded-sam-vit_h": [*grounded, "--sam", "vit_h", "--out", str(scratch / "gsam-h")],
        "grounded-sam-hq_vit_h": [*grounded, "--sam", "hq_vit_h", "--out", str(scratch / "gsam-hq-h")],
        "grounded-sam-sam2.1_hiera_l": [*grounded, "--sam", "sam2.1_hiera_l", "--out", str(scratch / "gsam-sam2-l")],
        "grounded-sam-mm-gdino-t": [*grounded, "--detector", "mm-gdino-t", "--sam", "vit_b",
                                    "--out", str(scratch / "gsam-mm-t")],
        "grounded-sam-owlv2-b": [*grounded, "--detector", "owlv2-b", "--sam", "vit_b",
                                 "--out", str(scratch / "gsam-owl-b")],
        "grounded-sam-owlv2-l": [*grounded, "--detector", "owlv2-l", "--sam", "vit_b",
                                 "--out", str(scratch / "gsam-owl-l")],
        "sam3": ["generate", *common, "--method", "sam3", "--sam3-checkpoint", "random",
                 "--out", str(scratch / "sam3")],
        "crf": [*refine, "--refine", "crf", "--out", str(scratch / "crf")],
        "sam-points": [*refine, "--refine", "sam", "--sam", "vit_b", "--sam-checkpoint", "random",
                       "--out", str(scratch / "sam-points")],
        "sam-points-compile": [*refine, "--refine", "sam", "--sam", "vit_b", "--sam-checkpoint", "random",
                               "--compile", "--out", str(scratch / "sam-points-compile")],
        "sam-points-hq_vit_h": [*refine, "--refine", "sam", "--sam", "hq_vit_h", "--sam-checkpoint", "random",
                                "--out", str(scratch / "sam-points-hq-h")],
        "sam-points-sam2.1_hiera_l": [*refine, "--refine", "sam", "--sam", "sam2.1_hiera_l", "--sam-checkpoint",
                                      "random", "--out", str(scratch / "sam-points-sam2-l")],
        "sam-auto": [*refine, "--refine", "sam", "--sam", "vit_b", "--sam-mode", "auto", "--sam-checkpoint", "random",
                     "--out", str(scratch / "sam-auto")],
        "cam-12mp": ["generate", "--dataset", "voc", "--root", str(big), "--device", device, "--overwrite",
                     "--method", "cam", *RANDOM_MODELS[:2], "--out", str(scratch / "cam-12mp")],
        "ray-1-worker": [*cam, "--engine", "ray", "--workers", "1", "--out", str(scratch / "ray1")],
        "ray-2-workers": [*cam, "--engine", "ray", "--workers", "2", "--out", str(scratch / "ray2")],
    }  # fmt: skip
    for name in BF16_STAGES:
        command = [*commands[name], "--precision", "bf16"]
        command[command.index("--out") + 1] += "-bf16"
        commands[f"{name}-bf16"] = command
    return commands


def stage_row(name: str, command: list[str], scratch: Path) -> dict[str, object]:
    """Run one pipeline stage and make its table row."""
    wall, memory = run_command(command, scratch)
    rate, images = manifest_rate(Path(command[command.index("--out") + 1]))
    if name in SIDE_BY_SIDE:
        # the quicker of two one-image runs: process start and model building (~15 s for the CAM here)
        # vary by seconds on a shared machine, as much as several images take
        one_image = min(run_command([*command, "--limit", "1"], scratch)[0] for _ in range(2))
        rate = (images - 1) / (wall - one_image) if wall > one_image else float("nan")
    note = "side by side" if name in SIDE_BY_SIDE else ""
    return {"stage": name, "rate": f"{rate:.3g} img/s", "s/img": f"{1 / rate:.3g}", "images": images,
            "wall": f"{wall:.1f}", "memory": memory, "note": note}  # fmt: skip


def deeplab_row(device: str, iterations: int, precision: str = "fp32") -> dict[str, object]:
    """The trainer benchmark's it/s and peak memory at ``precision``, as a table row."""
    done = subprocess.run(
        [sys.executable, str(HERE / "train_seg.py"), "--iters", str(iterations), "--device", device,
         "--precision", precision],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = float(re.search(r"([\d.]+) it/s", done.stdout).group(1))
    memory = float(re.search(r"peak memory (\d+) MB", done.stdout).group(1))
    hours = re.search(r"would take ([\d.]+) h", done.stdout).group(1)
    name = "deeplab-train" if precision == "fp32" else f"deeplab-train-{precision}"
    return {"stage": name, "rate": f"{rate:.3g} it/s", "s/img": "-", "images": iterations, "wall": "-",
            "memory": memory, "note": f"20k iterations: {hours} h"}  # fmt: skip


def clip_es_rows(device: str, images: int, clip_es: Path, bf16: bool) -> list[dict[str, object]]:
    """The published CLIP-ES loop and our CAM labeler side by side (``benchmarks/cam.py``: generated
    500x375 images with 1, 2 and 3 classes each, 2 rounds taking turns per image) as table rows."""
    precisions = "fp32,bf16" if bf16 else "fp32"
    rows = []
    for classes in (1, 2, 3):
        done = subprocess.run(
            [sys.executable, str(HERE / "cam.py"), "--images", str(images), "--classes", str(classes), "--rounds",
             "2", "--device", device, "--precisions", precisions, "--clip-es", str(clip_es), "--skip-generate",
             "--runs", "2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        published = float(re.search(r"^published: ([\d.]+) s/image", done.stdout, re.M).group(1))
        memory = float(re.search(r"peak (\d+) MB", done.stdout).group(1))
        rows.append(_cam_py_row(f"clip-es-published-{classes}c", published, images, memory,
                                "cam.py: one process with the rows below"))  # fmt: skip
        for name in precisions.split(","):
            seconds = float(re.search(rf"^ours {name}: ([\d.]+) s/image", done.stdout, re.M).group(1))
            median = re.search(rf"^ours {name} runs at .*median of per-image ratios ([\d.]+)x", done.stdout, re.M)
            stage = "cam-labeler" + ("" if name == "fp32" else f"-{name}") + f"-{classes}c"
            note = f"{published / seconds:.2f}x the published loop (per-image median {median.group(1)}x)"
            rows.append(_cam_py_row(stage, seconds, images, memory, note))
        run = re.search(r"^whole runs .*: published ([\d.]+) s/image", done.stdout, re.M)
        rows.append(_cam_py_row(f"clip-es-published-run-{classes}c", float(run.group(1)), images, memory,
                                "whole runs, taking turns with the rows below"))  # fmt: skip
        for line in re.finditer(r"^whole run ours (\w+), (.*): ([\d.]+) s/image, ([\d.]+)x", done.stdout, re.M):
            name, how, seconds, ratio = line.groups()
            stage = f"cam-{'workers' if 'processes' in how else 'run'}" + ("" if name == "fp32" else f"-{name}")
            rows.append(_cam_py_row(f"{stage}-{classes}c", float(seconds), images, memory,
                                    f"{ratio}x the published loop's whole run ({how})"))  # fmt: skip
    return rows


def _cam_py_row(stage: str, seconds: float, images: int, memory: float, note: str) -> dict[str, object]:
    """A table row of one ``benchmarks/cam.py`` figure (seconds per image, the process's peak MB)."""
    return {"stage": stage, "rate": f"{1 / seconds:.3g} img/s", "s/img": f"{seconds:.3g}", "images": images,
            "wall": "-", "memory": memory, "note": note}  # fmt: skip


def write_big_photo(root: Path) -> Path:
    """A VOC folder with one 4000x3000 photo labelled cat and sofa."""
    write_images(root, 1, 2, 300, 400)
    rgb = np.asarray(Image.open(root / "JPEGImages" / "bench_000.jpg").resize((4000, 3000)))
    Image.fromarray(rgb).save(root / "JPEGImages" / "bench_000.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, help="images per stage (default: 16 on CUDA, 3 on CPU)")
    parser.add_argument("--only", help="comma-separated stage names")
    parser.add_argument("--train-iters", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also bf16 rows of cam, grounded-sam-vit_b, sam-points, "
                        "deeplab-train")  # fmt: skip
    parser.add_argument("--clip-es", type=Path, help="a checkout of CLIP-ES: add its published loop's row")
    args = parser.parse_args()
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    count = args.images or (16 if device.startswith("cuda") else 3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        voc = scratch / "voc"
        write_images(voc, count, 2, 375, 500)
        big = write_big_photo(scratch / "big")
        commands = stage_commands(voc, big, scratch, device)
        default = [name for name in commands if args.bf16 or not name.endswith("-bf16")] + ["deeplab-train"]
        chosen = args.only.split(",") if args.only else default + (["deeplab-train-bf16"] if args.bf16 else [])
        for name in chosen:
            if name.startswith("deeplab-train"):
                rows.append(deeplab_row(device, args.train_iters, "bf16" if name.endswith("-bf16") else "fp32"))
            else:
                if name.startswith(("crf", "sam-")) and not (scratch / "cam" / "manifest.jsonl").exists():
                    run_command(commands["cam"], scratch)
                rows.append(stage_row(name, commands[name], scratch))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.clip_es is not None:
            rows += clip_es_rows(device, count, args.clip_es, args.bf16)
    print(f"\npseudolabel stages on {device} ({torch.get_num_threads()} CPU threads), random weights, real sizes")
    print(f"| {'stage':<27} | {'rate':>14} | {'s/image':>8} | {'images':>6} | {'wall s':>7} | {'peak MB':>8} | note")
    print(f"| {'-' * 27} | {'-' * 14} | {'-' * 8} | {'-' * 6} | {'-' * 7} | {'-' * 8} | ---")
    for row in rows:
        cells = f"| {row['stage']:<27} | {row['rate']:>14} | {row['s/img']:>8} | {row['images']:>6} | {row['wall']:>7}"
        cells += f" | {row['memory']:>8.0f} |"
        print(f"{cells} {row['note']}")


if __name__ == "__main__":
    main()

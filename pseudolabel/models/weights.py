"""Checkpoint registry, cache and downloads.

Every model option takes one of: a registry name (downloaded on first use into the cache and
verified by sha256), a local file path, or ``random`` (random initialisation, for tests and
throughput benchmarks only). The cache is ``$PSEUDOLABEL_HOME/weights``, else the platform
cache folder (``~/.cache/pseudolabel/weights`` on Linux). ``PSEUDOLABEL_OFFLINE=1`` never
tries the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudolabel.core.errors import WeightsError
from pseudolabel.core.files import atomic_output, home_dir

RANDOM = "random"
HASH_CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30
GATED_HOW = "is gated: accept its licence at {page} with a Hugging Face account, then set HF_TOKEN to a token of it"


@dataclass(frozen=True)
class WeightSpec:
    """One published checkpoint.

    Attributes:
        name: registry key, e.g. ``sam_vit_b``.
        kind: which model option takes it (``clip``, ``sam``, ``grounding-dino``, ``clipn``, ``sam3``, ``owlv2``,
            ``backbone``, ``segmenter``).
        filename: file name in the cache.
        url: direct download address, or None when the publisher offers none.
        sha256: full hex digest, or the publisher's prefix of it (torchvision names its files
            with the first 8 hex digits); None when no checksum is published.
        size_mb: approximate size, for display.
        description: what it is.
        manual: how to get the file by hand when ``url`` is None.
        gated: where the publisher's licence must be accepted before ``url`` serves the file
            (a Hugging Face repository); the download then sends ``HF_TOKEN``.
    """

    name: str
    kind: str
    filename: str
    url: str | None
    sha256: str | None
    size_mb: int
    description: str
    manual: str = ""
    gated: str = ""


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "clip_vit_b16_openai",
            "clip",
            "ViT-B-16.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
            351,
            "OpenAI CLIP ViT-B/16 (TorchScript archive; open_clip arch ViT-B-16-quickgelu)",
        ),
        WeightSpec(
            "sam_vit_b",
            "sam",
            "sam_vit_b_01ec64.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375,
            "Segment Anything ViT-B",
        ),
        WeightSpec(
            "sam_vit_l",
            "sam",
            "sam_vit_l_0b3195.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1250,
            "Segment Anything ViT-L",
        ),
        WeightSpec(
            "sam_vit_h",
            "sam",
            "sam_vit_h_4b8939.pth",
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2565,
            "Segment Anything ViT-H",
        ),
        WeightSpec(
            "sam_hq_vit_b",
            "sam",
            "sam_hq_vit_b.pth",
            "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_b.pth",
            None,
            379,
            "HQ-SAM ViT-B (SysCV)",
        ),
        WeightSpec(
            "sam_hq_vit_l",
            "sam",
            "sam_hq_vit_l.pth",
            "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_l.pth",
            None,
            1250,
            "HQ-SAM ViT-L (SysCV)",
        ),
        WeightSpec(
            "sam_hq_vit_h",
            "sam",
            "sam_hq_vit_h.pth",
            "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_h.pth",
            None,
            2570,
            "HQ-SAM ViT-H (SysCV)",
        ),
        WeightSpec(
            "sam_hq_vit_tiny",
            "sam",
            "sam_hq_vit_tiny.pth",
            "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_tiny.pth",
            None,
            41,
            "HQ-SAM TinyViT (SysCV)",
        ),
        WeightSpec(
            "sam2.1_hiera_tiny",
            "sam",
            "sam2.1_hiera_tiny.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
            None,
            156,
            "SAM 2.1 Hiera-T (Meta)",
        ),
        WeightSpec(
            "sam2.1_hiera_small",
            "sam",
            "sam2.1_hiera_small.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
            None,
            184,
            "SAM 2.1 Hiera-S (Meta)",
        ),
        WeightSpec(
            "sam2.1_hiera_base_plus",
            "sam",
            "sam2.1_hiera_base_plus.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
            None,
            324,
            "SAM 2.1 Hiera-B+ (Meta)",
        ),
        WeightSpec(
            "sam2.1_hiera_large",
            "sam",
            "sam2.1_hiera_large.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
            None,
            898,
            "SAM 2.1 Hiera-L (Meta)",
        ),
        WeightSpec(
            "sam3",
            "sam3",
            "sam3.safetensors",
            "https://huggingface.co/facebook/sam3/resolve/main/model.safetensors",
            None,
            3450,
            "SAM 3 (Meta; transformers layout)",
            gated="https://huggingface.co/facebook/sam3",
        ),
        WeightSpec(
            "sam3_meta",
            "sam3",
            "sam3.pt",
            "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt",
            None,
            3450,
            "SAM 3 (Meta; the sam3 package's layout, converted on load)",
            gated="https://huggingface.co/facebook/sam3",
        ),
        WeightSpec(
            "gdino_swint",
            "grounding-dino",
            "groundingdino_swint_ogc.pth",
            "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth",
            "3b3ca2563c77c69f651d7bd133e97139c186df06231157a64c507099c52bc799",
            694,
            "Grounding DINO Swin-T (O365, GoldG, Cap4M)",
        ),
        WeightSpec(
            "gdino_swinb",
            "grounding-dino",
            "groundingdino_swinb_cogcoor.pth",
            "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha2/groundingdino_swinb_cogcoor.pth",
            None,
            938,
            "Grounding DINO Swin-B",
        ),
        WeightSpec(
            "mm_gdino_t",
            "grounding-dino",
            "mm_grounding_dino_tiny.safetensors",
            "https://huggingface.co/openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det/resolve/main/"
            "model.safetensors",
            None,
            690,
            "MM-Grounding-DINO Swin-T (O365v1, GoldG, V3Det; transformers layout)",
        ),
        WeightSpec(
            "mm_gdino_b",
            "grounding-dino",
            "mm_grounding_dino_base.safetensors",
            "https://huggingface.co/openmmlab-community/mm_grounding_dino_base_o365v1_goldg_v3det/resolve/main/"
            "model.safetensors",
            None,
            930,
            "MM-Grounding-DINO Swin-B (O365v1, GoldG, V3Det; transformers layout)",
        ),
        WeightSpec(
            "owlv2_base",
            "owlv2",
            "owlv2-base-patch16-ensemble.safetensors",
            "https://huggingface.co/google/owlv2-base-patch16-ensemble/resolve/main/model.safetensors",
            None,
            620,
            "OWLv2 B/16 ensemble (Google; transformers layout)",
        ),
        WeightSpec(
            "owlv2_large",
            "owlv2",
            "owlv2-large-patch14-ensemble.safetensors",
            "https://huggingface.co/google/owlv2-large-patch14-ensemble/resolve/main/model.safetensors",
            None,
            1750,
            "OWLv2 L/14 ensemble (Google; transformers layout)",
        ),
        WeightSpec(
            "clipn_vit_b16",
            "clipn",
            "clipn_vit_b16.pt",
            None,
            None,
            600,
            "CLIPN ViT-B/16 'no' text tower (OpenCLIP laion2b based)",
            manual="the CLIPN project (ICCV 2023) distributes it outside package registries",
        ),
        WeightSpec(
            "resnet101_imagenet",
            "backbone",
            "resnet101-63fe2227.pth",
            "https://download.pytorch.org/models/resnet101-63fe2227.pth",
            "63fe2227",
            171,
            "torchvision ResNet-101 ImageNet-1k (V1); checksum = torchvision's published sha256 prefix",
        ),
        WeightSpec(
            "deeplab_coco_init",
            "backbone",
            "deeplabv1_resnet101-coco.pth",
            None,
            None,
            170,
            "DeepLab's COCO-trained Caffe ResNet-101 init (--backbone resnet101-caffe --backbone-weights coco)",
            manual="deeplab-pytorch makes it from the DeepLab authors' init.caffemodel "
            "(scripts/setup_caffemodels.sh, then python convert.py --dataset coco)",
        ),
        WeightSpec(
            "deeplab_voc12_msc",
            "segmenter",
            "deeplabv2_resnet101_msc-vocaug-20000.pth",
            "https://github.com/kazuto1011/deeplab-pytorch/releases/download/v1.0/deeplabv2_resnet101_msc-vocaug-20000.pth",
            None,
            170,
            "deeplab-pytorch's DeepLabV2 trained on VOC trainaug (val 76.65, 77.93 with CRF)",
        ),
    )
}


def cache_dir() -> Path:
    """Folder where registry checkpoints are stored."""
    return home_dir() / "weights"


def cached_path(spec: WeightSpec) -> Path:
    """Where ``spec`` lives in the cache (whether or not it is there)."""
    return cache_dir() / spec.filename


def offline() -> bool:
    """True when ``PSEUDOLABEL_OFFLINE`` is set to a true value."""
    return os.environ.get("PSEUDOLABEL_OFFLINE", "").lower() in ("1", "true", "yes")


def warn_random(kind: str) -> None:
    """Tell the user that randomly initialised weights give meaningless masks."""
    print(
        f"warning: {kind} weights are random: the masks mean nothing (use this for tests and benchmarks only)",
        file=sys.stderr,
    )


def resolve_weights(value: str, kind: str, download: bool = True, allow_directory: bool = False) -> Path | None:
    """Turn a model option value into a checkpoint file.

    Args:
        value: registry name, local file path, or ``random``.
        kind: the model option's kind; a registry name of another kind is refused.
        download: fetch a missing registry checkpoint (unless offline).
        allow_directory: a local folder is accepted too (a transformers ``save_pretrained`` folder).

    Returns:
        The file, or None for ``random`` (after printing a warning).

    Raises:
        WeightsError: one line naming the file, where it was looked for, and how to get it.
    """
    if value == RANDOM:
        warn_random(kind)
        return None
    spec = WEIGHTS.get(value)
    if spec is not None:
        if spec.kind != kind:
            raise WeightsError(
                f"{value!r} is a {spec.kind} checkpoint, not a {kind} one; known {kind} names: {_names(kind)}"
            )
        path = cached_path(spec)
        if path.is_file():
            return path
        if not download or offline() or spec.url is None:
            raise MissingWeights(spec)
        return download_weights(spec)
    path = Path(value).expanduser()
    if path.is_file() or (allow_directory and path.is_dir()):
        return path
    if path.suffix or os.sep in value or "/" in value:
        raise WeightsError(f"weights file {path} does not exist")
    raise WeightsError(f"unknown {kind} weights {value!r}: give one of {_names(kind)}, a file path, or 'random'")


def _names(kind: str) -> str:
    return ", ".join(name for name, spec in WEIGHTS.items() if spec.kind == kind) or "none"


class MissingWeights(WeightsError):
    """A registry checkpoint that is not in the cache and cannot be downloaded here."""

    def __init__(self, spec: WeightSpec) -> None:
        self.spec = spec
        super().__init__(missing_message([spec]))


def missing_message(specs: list[WeightSpec]) -> str:
    """One short line: which files are missing, where they were looked for, what puts them there."""
    several = len(specs) > 1
    files = ", ".join(spec.filename + (f" ({spec.manual})" if spec.manual else "") for spec in specs)
    where = f"looked in {cache_dir()}" if several else f"looked for {cached_path(specs[0])}"
    them = "them" if several else "it"
    names = " ".join(spec.name for spec in specs if spec.url)
    fetch = f"`pseudolabel models download {names}` fetches {them} where there is network; " if names else ""
    gated = "".join(f"; {spec.name} {GATED_HOW.format(page=spec.gated)}" for spec in specs if spec.gated)
    return f"missing weights {files}: {where}; {fetch}copy {them} there or pass a path{gated}"


def check_all(resolvers: list[Callable[[], object]]) -> None:
    """Run every resolver (a function that finds or downloads one checkpoint) and raise one
    WeightsError naming every failure, so a run learns of all missing files at once."""
    missing: list[WeightSpec] = []
    problems: list[str] = []
    for resolve in resolvers:
        try:
            resolve()
        except MissingWeights as error:
            missing.append(error.spec)
        except WeightsError as error:
            problems.append(str(error))
    if missing:
        problems.insert(0, missing_message(missing))
    if problems:
        raise WeightsError("; ".join(problems))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_matches(spec: WeightSpec, digest: str) -> bool:
    """True when ``digest`` agrees with the registry's full sha256 or published prefix."""
    return spec.sha256 is not None and digest.startswith(spec.sha256.lower())


def download_weights(
    spec: WeightSpec,
    allow_unverified: bool = False,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``spec`` into the cache, verifying its sha256 before it appears there.

    ``on_progress(bytes_done, bytes_total_or_None)`` is called as data arrives. Nothing is
    left in the cache when the download fails or the checksum does not match.

    Raises:
        WeightsError: no URL, network failure, checksum mismatch, or no published checksum
            without ``allow_unverified``.
    """
    path = cached_path(spec)
    if spec.url is None:
        raise MissingWeights(spec)
    if spec.sha256 is None and not allow_unverified:
        raise WeightsError(
            f"{spec.name} has no published sha256; download it with `pseudolabel models download {spec.name} "
            f"--allow-unverified` or from {spec.url} to {path}"
        )
    digest = hashlib.sha256()
    request = urllib.request.Request(spec.url)
    token = os.environ.get("HF_TOKEN")
    if spec.gated and token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with atomic_output(path) as temp, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            with temp.open("wb") as handle:
                while chunk := response.read(HASH_CHUNK_BYTES):
                    handle.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
            if spec.sha256 is not None and not checksum_matches(spec, digest.hexdigest()):
                raise WeightsError(
                    f"checksum mismatch for {spec.filename} from {spec.url}: got sha256 {digest.hexdigest()}, "
                    f"expected {spec.sha256}; the file was not kept"
                )
    except urllib.error.HTTPError as error:
        if spec.gated and error.code in (401, 403):
            raise WeightsError(
                f"could not download {spec.name} (HTTP {error.code}): it {GATED_HOW.format(page=spec.gated)}"
                + ("" if token else " (HF_TOKEN is not set)")
            ) from error
        raise WeightsError(
            f"could not download {spec.name} (HTTP {error.code}): fetch {spec.url} on a machine with network and "
            f"copy it to {path}, or pass its path"
        ) from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(
            f"could not download {spec.name} ({reason}): fetch {spec.url} on a machine with network and copy "
            f"it to {path}, or pass its path"
        ) from error
    return path


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one cached checkpoint: ``ok``, ``mismatch``, ``missing`` or ``unverifiable``."""

    spec: WeightSpec
    status: str
    digest: str | None


def verify_weights(spec: WeightSpec) -> VerifyResult:
    """Hash the cached file of ``spec`` and compare it with the registry."""
    path = cached_path(spec)
    if not path.is_file():
        return VerifyResult(spec, "missing", None)
    digest = sha256_file(path)
    if spec.sha256 is None:
        return VerifyResult(spec, "unverifiable", digest)
    return VerifyResult(spec, "ok" if checksum_matches(spec, digest) else "mismatch", digest)


RenameRule = tuple[str, str | Callable[[re.Match[str]], str]]
"""A regular expression and its ``re.sub`` replacement, for a checkpoint's key names."""


def renamed(key: str, rules: Sequence[RenameRule]) -> str:
    """``key`` after every rule in turn (each ``re.sub`` over the whole key)."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def load_every_parameter(module: Any, state: dict[str, Any], what: str, path: Path) -> None:
    """Load ``state`` into torch ``module``: every parameter must be there and nothing else.

    Raises:
        WeightsError: missing or unexpected keys, or other shapes (``what`` and ``path`` name the file).
    """
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
    except (RuntimeError, ValueError) as error:
        raise WeightsError(f"{what} {path} does not load: {str(error).splitlines()[0]}") from error


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint file's state dict: ``.safetensors``, or ``torch.load(weights_only=True)`` with
    ``model`` / ``state_dict`` wrappers removed.

    Raises:
        WeightsError: an unreadable file, or one that holds no state dict (``what`` names it).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read {what} {path}: {str(error).splitlines()[0]}") from error
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict):
        raise WeightsError(f"{what} {path} hold no state dict")
    return loaded

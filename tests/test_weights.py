"""Weights registry: names, paths, random; offline errors; verified downloads; `models` commands."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import WeightsError
from pseudolabel.models import weights
from pseudolabel.models.weights import WEIGHTS, WeightSpec, cache_dir, cached_path, download_weights, resolve_weights

runner = CliRunner()
PAYLOAD = b"pretend checkpoint " * 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server over a folder holding ``ckpt.pth``; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "ckpt.pth").write_bytes(PAYLOAD)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _spec(url: str | None, sha256: str | None) -> WeightSpec:
    return WeightSpec("test_ckpt", "sam", "test_ckpt.pth", url, sha256, 1, "test")


def test_registry_entries_are_complete() -> None:
    assert {"clip_vit_b16_openai", "sam_vit_b", "sam_vit_l", "sam_vit_h", "gdino_swint", "gdino_swinb"} <= set(WEIGHTS)
    assert {"clipn_vit_b16", "resnet101_imagenet"} <= set(WEIGHTS)
    for spec in WEIGHTS.values():
        assert spec.url or spec.manual, spec.name
        if spec.sha256:
            assert len(spec.sha256) in (8, 64) and int(spec.sha256, 16) >= 0
    # OpenAI's CLIP URLs carry the file's sha256 as a path component.
    clip = WEIGHTS["clip_vit_b16_openai"]
    assert clip.url and clip.sha256 in clip.url


def test_random_returns_none_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_weights("random", "sam") is None
    assert "random: the masks mean nothing" in capsys.readouterr().err


def test_local_path_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    assert resolve_weights(str(path), "sam") == path
    with pytest.raises(WeightsError, match=r"weights file .*other\.pth does not exist"):
        resolve_weights(str(tmp_path / "other.pth"), "sam")


def test_unknown_name_and_wrong_kind() -> None:
    with pytest.raises(WeightsError, match=r"unknown sam weights 'vit_x'.*sam_vit_b"):
        resolve_weights("vit_x", "sam")
    with pytest.raises(WeightsError, match=r"'sam_vit_b' is a sam checkpoint, not a clip one"):
        resolve_weights("sam_vit_b", "clip")


def test_missing_weights_offline_is_one_line_with_file_place_and_command() -> None:
    with pytest.raises(WeightsError) as caught:
        resolve_weights("sam_vit_b", "sam")
    message = str(caught.value)
    assert "\n" not in message
    assert "sam_vit_b_01ec64.pth" in message
    assert str(cached_path(WEIGHTS["sam_vit_b"])) in message
    assert "pseudolabel models download sam_vit_b" in message
    assert "dl.fbaipublicfiles.com" not in message
    assert len(message) < 170 + len(str(cached_path(WEIGHTS["sam_vit_b"])))


def test_cached_file_is_found_without_network() -> None:
    path = cached_path(WEIGHTS["sam_vit_b"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"cached")
    assert resolve_weights("sam_vit_b", "sam") == path


def test_download_verifies_sha256(server: str) -> None:
    good = _spec(f"{server}/ckpt.pth", hashlib.sha256(PAYLOAD).hexdigest())
    progress: list[int] = []
    path = download_weights(good, on_progress=lambda done, total: progress.append(done))
    assert path.read_bytes() == PAYLOAD
    assert progress[-1] == len(PAYLOAD)


def test_download_with_wrong_checksum_keeps_nothing(server: str) -> None:
    bad = _spec(f"{server}/ckpt.pth", "0" * 64)
    with pytest.raises(WeightsError, match=r"checksum mismatch for test_ckpt\.pth"):
        download_weights(bad)
    assert not cached_path(bad).parent.exists() or not list(cached_path(bad).parent.iterdir())


def test_prefix_checksum_is_accepted(server: str) -> None:
    spec = _spec(f"{server}/ckpt.pth", hashlib.sha256(PAYLOAD).hexdigest()[:8])
    assert download_weights(spec).is_file()


def test_unverifiable_download_needs_opt_in(server: str) -> None:
    spec = _spec(f"{server}/ckpt.pth", None)
    with pytest.raises(WeightsError, match=r"no published sha256.*--allow-unverified"):
        download_weights(spec)
    assert download_weights(spec, allow_unverified=True).read_bytes() == PAYLOAD


def test_unreachable_host_is_a_one_line_error(server: str) -> None:
    spec = _spec(f"{server}/absent.pth", "0" * 64)
    with pytest.raises(WeightsError) as caught:
        download_weights(spec)
    message = str(caught.value)
    assert message.startswith("could not download test_ckpt (") and "\n" not in message
    assert f"fetch {server}/absent.pth on a machine with network and copy it to {cached_path(spec)}" in message
    assert "models download" not in message  # the command that just failed is no advice


def test_verify_says_when_nothing_is_cached() -> None:
    result = CliRunner().invoke(app, ["models", "verify"])
    assert result.exit_code == 0 and result.output.startswith(f"nothing cached in {cache_dir()}")


def test_resolve_downloads_on_first_use(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PSEUDOLABEL_OFFLINE")
    spec = _spec(f"{server}/ckpt.pth", hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(weights.WEIGHTS, spec.name, spec)
    assert resolve_weights("test_ckpt", "sam").read_bytes() == PAYLOAD


def test_models_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = runner.invoke(app, ["models", "list"], env={"COLUMNS": "80"})
    assert listing.exit_code == 0 and "sam_vit_h" in listing.output
    assert "…" not in listing.output and "--allow-unverified" in listing.output  # folded, never cut
    path = cached_path(WEIGHTS["sam_vit_b"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not the real file")
    verify = runner.invoke(app, ["models", "verify", "sam_vit_b"])
    assert verify.exit_code == 1
    assert "sam_vit_b: mismatch" in verify.output and "checksum mismatch: sam_vit_b" in verify.output
    missing = runner.invoke(app, ["models", "download", "clipn_vit_b16"])
    assert missing.exit_code == 1 and "bytes" not in missing.output  # no progress bar for a file without URL
    assert missing.output.startswith("error: missing weights clipn_vit_b16.pt (the CLIPN project")
    assert "outside package registries): looked for" in missing.output and "copy it there" in missing.output
    unknown = runner.invoke(app, ["models", "download", "nope"])
    assert unknown.exit_code == 1 and "unknown checkpoint 'nope'" in unknown.output


@pytest.mark.parametrize(
    ("build", "words", "missing"),
    [
        ("clip", ("default", "openai"), "ViT-B-16.pt"),
        ("sam", ("default",), "sam_vit_b_01ec64.pth"),
        ("deeplab-resnet101", ("default", "imagenet"), "resnet101-63fe2227.pth"),
        ("deeplab-caffe", ("default", "coco"), "deeplabv1_resnet101-coco.pth"),
    ],
)
def test_default_means_each_models_published_weights_and_old_words_still_work(build, words, missing) -> None:
    """Offline with an empty cache, ``default`` and its older alias both look for the published file."""
    from pseudolabel.models.clip import build_clip
    from pseudolabel.models.deeplab import DeepLabV2, load_backbone_weights
    from pseudolabel.models.sam import build_sam

    builders = {
        "clip": lambda word: build_clip("ViT-B-16-quickgelu", word),
        "sam": lambda word: build_sam("vit_b", word),
        "deeplab-resnet101": lambda word: load_backbone_weights(DeepLabV2(21, "resnet101"), word),
        "deeplab-caffe": lambda word: load_backbone_weights(DeepLabV2(21, "resnet101-caffe"), word),
    }
    for word in words:
        with pytest.raises(WeightsError, match=re.escape(missing)):
            builders[build](word)

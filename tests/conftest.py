"""Test settings: no network, a private weights cache, and small mask helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

# --precision auto is fp32 on every CPU in the tests (set for the whole session, so module fixtures
# such as the Ray instance and every subprocess see it too), so outputs do not depend on whether
# this CPU has native bf16; the bf16 tests ask for bf16 by name
os.environ["PSEUDOLABEL_CPU_BF16"] = "0"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PSEUDOLABEL_OFFLINE", "1")
    monkeypatch.setenv("PSEUDOLABEL_HOME", str(tmp_path_factory.mktemp("home")))


def random_label_pair(
    rng: np.random.Generator, height: int, width: int, num_classes: int, unsure: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """A blobby GT (with a 255 band) and a perturbed prediction (with some 255), uint8 [H, W]."""
    gt = np.zeros((height, width), dtype=np.uint8)
    for _ in range(3):
        class_id = int(rng.integers(1, num_classes))
        top, left = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
        gt[top : top + int(rng.integers(4, height)), left : left + int(rng.integers(4, width))] = class_id
    pred = gt.copy()
    shift = int(rng.integers(-3, 4))
    pred = np.roll(pred, shift, axis=1)
    noise = rng.random((height, width))
    pred[noise < 0.05] = rng.integers(0, num_classes, size=int((noise < 0.05).sum()))
    pred[(noise > 0.05) & (noise < 0.05 + unsure)] = 255
    band = rng.random((height, width)) < 0.03
    gt[band] = 255
    return gt, pred

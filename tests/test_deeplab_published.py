"""DeepLabV2 as deeplab-pytorch publishes it: the Caffe ResNet-101 and its checkpoints, MSC test
and training outputs, the stepped poly schedule, the label resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deeplab_reference import CROP, MSC_FILE, published_shapes, random_state_dict
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.core.errors import WeightsError
from pseudolabel.core.masks import read_mask
from pseudolabel.models.caffe_resnet import from_deeplab_pytorch
from pseudolabel.models.deeplab import DeepLabV2, load_backbone_weights
from pseudolabel.train.predict import model_from_checkpoint, predict_probabilities
from pseudolabel.train.trainer import MscNetwork, TrainConfig, make_optimizer, sample_mean_cross_entropy, training_loss

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "voc" / "VOC2012"
runner = CliRunner()


@pytest.fixture(scope="module")
def voc_model_state() -> dict[str, torch.Tensor]:
    return random_state_dict(published_shapes("voc12"))


@pytest.fixture(scope="module")
def example_crop() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / "JPEGImages" / "2026_000001.jpg").convert("RGB"))[CROP]


def test_published_voc_model_loads_key_for_key(voc_model_state) -> None:
    model = DeepLabV2(21, "resnet101-caffe")
    result = model.load_state_dict(from_deeplab_pytorch(voc_model_state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.layer1.block1.reduce.conv.weight, voc_model_state["base.layer2.block1.reduce.conv.weight"])
    assert torch.equal(model.aspp.branches[3].bias, voc_model_state["base.aspp.c3.bias"])


def test_coco_init_loads_without_its_classifier(tmp_path: Path) -> None:
    state = random_state_dict(published_shapes("coco"), seed=1)
    torch.save(state, tmp_path / "deeplabv1_resnet101-coco.pth")
    model = DeepLabV2(21, "resnet101-caffe")
    aspp_before = model.aspp.branches[0].weight.clone()
    load_backbone_weights(model, str(tmp_path / "deeplabv1_resnet101-coco.pth"))
    assert torch.equal(model.stem.conv1.conv.weight, state["layer1.conv1.conv.weight"])
    assert torch.equal(model.layer4.block3.increase.bn.running_var, state["layer5.block3.increase.bn.running_var"])
    assert torch.equal(model.aspp.branches[0].weight, aspp_before)  # fc (91 COCO classes) is not an ASPP
    with pytest.raises(WeightsError, match="needs --backbone resnet101-caffe"):
        load_backbone_weights(DeepLabV2(21, "resnet101"), str(tmp_path / "deeplabv1_resnet101-coco.pth"))


def test_caffe_backbone_strides_in_the_first_1x1_and_pools_rounding_up() -> None:
    model = DeepLabV2(21, "resnet101-caffe")
    assert model.layer2.block1.reduce.conv.stride == (2, 2) and model.layer2.block1.conv3x3.conv.stride == (1, 1)
    assert model.stem.pool.ceil_mode and model.layer3.block1.conv3x3.conv.dilation == (2, 2)
    assert len(model.layer3) == 23 and model.layer4.block1.conv3x3.conv.dilation == (4, 4)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 97, 129)).shape == (1, 21, 13, 17)


def test_logits_equal_deeplab_pytorch_run_on_the_same_weights(voc_model_state, example_crop) -> None:
    """The fixture holds what deeplab-pytorch's own MSC module output in eval mode (scale 1, then
    0.5 and 0.75, max on the scale-1 grid) for these weights and this crop."""
    reference = np.load(MSC_FILE)
    model = DeepLabV2(21, "resnet101-caffe")
    model.load_state_dict(from_deeplab_pytorch(voc_model_state))
    model.eval()
    image = torch.from_numpy(example_crop[..., ::-1].astype(np.float32).copy()).permute(2, 0, 1)
    image = (image - torch.tensor([104.008, 116.669, 122.675]).view(3, 1, 1))[None]  # its cv2 BGR - mean
    with torch.no_grad():
        base, *_, fused = model.multi_scale(image)
        probabilities = predict_probabilities(model, example_crop)
    scale = float(np.abs(reference["msc_logits"]).max())
    np.testing.assert_allclose(base[0].numpy(), reference["base_logits"], atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(fused[0].numpy(), reference["msc_logits"], atol=1e-5 * scale, rtol=0)
    # main.py's test: the fused logits resized to the image, softmax
    expected = F.interpolate(torch.from_numpy(reference["msc_logits"])[None], size=example_crop.shape[:2],
                             mode="bilinear", align_corners=False)[0].softmax(dim=0)  # fmt: skip
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=0)
    assert not torch.equal(fused, base)  # the other scales changed the max somewhere


def test_predict_reads_a_deeplab_pytorch_checkpoint(tmp_path: Path, voc_model_state) -> None:
    path = tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth"
    torch.save(voc_model_state, path)
    model = model_from_checkpoint(path, 21, torch.device("cpu"))
    assert torch.equal(model.aspp.branches[0].weight, voc_model_state["base.aspp.c0.weight"])
    with pytest.raises(WeightsError, match="not a DeepLabV2 for 81 classes"):
        model_from_checkpoint(path, 81, torch.device("cpu"))
    result = runner.invoke(app, ["predict", "--checkpoint", str(path), "--dataset", "voc", "--root", str(EXAMPLES),
                                 "--out", str(tmp_path / "pred"), "--device", "cpu", "--num-workers", "0",
                                 "--limit", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    written = (tmp_path / "pred" / "config.yaml").read_text()
    assert "scales: 1.0,0.5,0.75" in written and "flip: false" in written  # deeplab-pytorch's test defaults
    predicted = read_mask(next((tmp_path / "pred").glob("*.png")))
    assert predicted.max() <= 20


def test_poly_rate_changes_every_10_iterations_like_polynomial_lr(tmp_path: Path) -> None:
    """deeplab-pytorch: after iteration j, ``scheduler.step(epoch=j)`` sets lr = base * (1 - j / max) ** 0.9
    only when j is a positive multiple of LR_DECAY (10) and j <= max; otherwise lr stays."""
    model = DeepLabV2(21, "resnet18")
    config = TrainConfig(tmp_path, tmp_path, iterations=100, lr=2.5e-4, weight_decay=5e-4)
    optimizer, scheduler = make_optimizer(model, config)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 5e-4, 0.0]
    assert optimizer.param_groups[2]["params"][0] is model.aspp.branches[0].bias
    base = [2.5e-4, 2.5e-3, 5e-3]
    reference = list(base)
    for iteration in range(1, 101):  # 1-based, as deeplab-pytorch's loop
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(reference, rel=1e-9), iteration
        optimizer.step()
        scheduler.step()
        if iteration % 10 == 0:
            reference = [lr * (1 - iteration / 100) ** 0.9 for lr in base]


def test_msc_training_loss_is_summed_over_each_scale_at_its_own_size() -> None:
    """deeplab-pytorch: CE of the scale-1, 0.5, 0.75 logits and their max, each against the labels
    resized by PIL's nearest to that output's size (its ``resize_labels``)."""
    torch.manual_seed(0)
    model = DeepLabV2(5, "resnet18").eval()
    images = torch.randn(2, 3, 65, 65)
    labels = torch.randint(0, 5, (2, 65, 65))
    labels[:, :5] = 255
    config = TrainConfig(Path("."), Path("."), msc=True)
    got = training_loss(MscNetwork(model), images, labels, config)
    outputs = model.multi_scale(images)
    assert [tuple(o.shape[2:]) for o in outputs] == [(9, 9), (4, 4), (6, 6), (9, 9)]  # own sizes, max on scale 1
    expected = 0
    for logits in outputs:
        height, width = logits.shape[2:]
        small = [
            np.asarray(Image.fromarray(label.numpy().astype(np.float32)).resize((width, height), Image.NEAREST))
            for label in labels
        ]
        expected = expected + sample_mean_cross_entropy(logits, torch.from_numpy(np.stack(small)).long(), False)
    torch.testing.assert_close(got, expected)

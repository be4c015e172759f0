"""Registry: every detector x {tiny, mbv2} builds, trains a step and predicts; names, weights."""

from __future__ import annotations

import pytest
import torch

from pgd.detectors import model_config, model_names, parse_name
from pgd.errors import ConfigError
from pgd.testing import synthetic_batch, total_loss

DETECTORS = ["atss", "fcos", "gfl", "ddod", "autoassign"]


@pytest.mark.parametrize("backbone", ["tiny", "mbv2"])
@pytest.mark.parametrize("detector", DETECTORS)
def test_build_train_step_and_predict(scope, detector, backbone):
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(model_config(f"{detector}_{backbone}", num_classes=6))
    model.init_weights()
    model.train()
    data = synthetic_batch(model)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(**data, mode="loss")
    total = total_loss(losses)
    assert torch.isfinite(total) and total > 0
    total.backward()
    opt.step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("bbox_head.") for k in changed)
    assert any(k.startswith("backbone.") for k in changed)
    model.eval()
    with torch.no_grad():
        preds = model(**synthetic_batch(model), mode="predict")
    assert len(preds) == 2
    inst = preds[0].pred_instances
    assert inst.bboxes.shape[1] == 4 and inst.bboxes.shape[0] == inst.scores.shape[0]
    assert torch.isfinite(inst.bboxes).all()
    if inst.labels.numel():
        assert 0 <= int(inst.labels.min()) and int(inst.labels.max()) < 6


def test_mbv2_backbone_carries_imagenet_weights(scope):
    from mmdet.registry import MODELS

    from pgd.detectors.mobilenet import packaged_weights_path, remap

    model = MODELS.build(model_config("atss_mbv2", num_classes=3))
    model.init_weights()
    tv = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    mapped = remap(tv)
    state = model.backbone.state_dict()
    assert set(mapped) == set(state)  # every backbone tensor has a source, nothing left over
    for key in ("conv1.conv.weight", "layer2.1.expand_conv.bn.running_var", "layer7.0.linear_conv.conv.weight"):
        assert torch.equal(state[key], mapped[key])
    assert torch.equal(state["conv1.conv.weight"], tv["features.0.0.weight"])
    # frozen BN for the pretrained backbone
    assert model.backbone.norm_eval is True


def test_scratch_resnet_is_not_frozen(scope):
    cfg = model_config("atss_tiny", 3)
    assert cfg["backbone"]["init_cfg"] is None
    assert cfg["backbone"]["frozen_stages"] == -1 and cfg["backbone"]["norm_eval"] is False
    cfg = model_config("atss_r50", 3, frozen_backbone_bn=True)
    assert cfg["backbone"]["depth"] == 50 and cfg["backbone"]["norm_eval"] is True
    assert model_config("gfl_r101", 80)["backbone"]["depth"] == 101


def test_backbone_checkpoint_by_path(tmp_path, scope):
    from mmdet.registry import MODELS

    src = MODELS.build(model_config("fcos_tiny", 3))
    ckpt = tmp_path / "backbone.pth"
    torch.save(src.backbone.state_dict(), ckpt)
    cfg = model_config("fcos_tiny", 3, backbone_checkpoint=str(ckpt))
    assert cfg["backbone"]["init_cfg"] == dict(type="Pretrained", checkpoint=str(ckpt))
    model = MODELS.build(cfg)
    model.init_weights()
    assert torch.equal(model.backbone.conv1.weight, src.backbone.conv1.weight)
    with pytest.raises(ConfigError, match="does not exist"):
        model_config("fcos_tiny", 3, backbone_checkpoint=str(tmp_path / "missing.pth"))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ConfigError, match="atss_r50") as e:
        parse_name("retinanet_r50")
    assert "autoassign_mbv2" in str(e.value)
    with pytest.raises(ConfigError):
        parse_name("atss_r34")
    with pytest.raises(ConfigError):
        model_config("atss_tiny", 0)
    assert len(model_names()) == 20


def test_downloads_are_refused(scope):
    from mmengine.runner.checkpoint import CheckpointLoader

    with pytest.raises(ConfigError, match="never downloads"):
        CheckpointLoader.load_checkpoint("torchvision://resnet50")
    with pytest.raises(ConfigError, match="never downloads"):
        CheckpointLoader.load_checkpoint("https://download.openmmlab.com/x.pth")

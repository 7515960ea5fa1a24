"""The weights shipped inside the package: present, small, self-describing, and better than a constant guess."""

import torch

from defocus.demo import make_test_stack
from defocus.metrics import depth_metrics
from defocus.predict import predict_stack
from defocus.models.checkpoint import read_metadata
from defocus.models.factory import create_model
from defocus.models.factory import shipped_weights_path


def test_shipped_weights_are_present_and_small():
    path = shipped_weights_path()
    assert path.is_file(), "train them with: defocus train --config release --export " + str(path)
    assert path.stat().st_size < 20 * 1024 * 1024


def test_shipped_weights_carry_their_training_config():
    meta = read_metadata(shipped_weights_path())
    cfg = meta["train_config"]
    assert cfg["name"] == "release"
    assert cfg["model"]["name"] == meta["model_name"]
    assert set(cfg["data"]["presets"]) == {"nyuv2", "defocusnet"}


def test_shipped_weights_predict_metric_depth_on_a_test_stack():
    model = create_model(pretrained=True)
    stack = make_test_stack("defocusnet", "paper", 0)
    # Downsampled to keep the test quick: the camera's pixel pitch scales with the image.
    small = torch.nn.functional.interpolate(stack.images, scale_factor=0.5, mode="area")
    stack.images = small
    stack.camera = stack.camera.resized(0.5)
    gt = torch.from_numpy(stack.gt_depth)[None, None]
    gt = torch.nn.functional.interpolate(gt, scale_factor=0.5, mode="nearest")[0, 0]
    pred = predict_stack(model, stack, depth_range=(0.1, 3.0))
    assert pred.depth_map.shape == gt.shape
    ours = depth_metrics(pred.depth_map, gt)["abs_rel"]
    constant = depth_metrics(torch.full_like(gt, float(gt[gt > 0].median())), gt)["abs_rel"]
    assert ours < constant


def test_factory_loads_the_shipped_weights():
    from defocus.models.factory import create_model

    model = create_model("daifnet_small", pretrained=True)
    loaded = create_model(pretrained=True)
    assert not model.training
    for (na, a), (nb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert na == nb and torch.equal(a, b)

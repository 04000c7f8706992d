"""pytorchvideo's 3D-CNN baselines in our configs, trainer, evaluation and tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

import rnlvideo
from rnlvideo.config import ConfigError, build_model, compose_config
from rnlvideo.data.pathways import slowfast_pathways
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.optim import create_sgd
from rnlvideo.engine.trainer import Trainer
from rnlvideo.engine.training_state import load_finetune_weights
from rnlvideo.models.official import OfficialCheckpointError, convert_official_state_dict
from tests.conftest import tiny_run_overrides
from tools import convert_official
from tools import flops as flops_tool
from tools import test as test_tool

DEMO = ["+experiment=demo", "data.num_segments=4", "data.input_size=32"]


def random_clips(cfg: DictConfig, batch: int, size: int) -> torch.Tensor | list[torch.Tensor]:
    """``(batch, 3, T, size, size)`` noise, as ``[slow, fast]`` with ``data.slowfast_alpha``."""
    clips = torch.randn(batch, 3, cfg.data.num_segments, size, size)
    alpha = cfg.data.slowfast_alpha
    return slowfast_pathways(clips, alpha) if alpha else clips


def classifier(net: nn.Module) -> nn.Linear:
    return net.get_submodule(net.classifier_prefix.removesuffix("."))


@pytest.mark.parametrize(
    ("model", "pools"),
    [
        ("x3d_s", [(4, 2, 2)]),
        ("slow_r50", [(4, 2, 2)]),
        ("slowfast_r50", [(1, 2, 2), (4, 2, 2)]),  # slow: 4 // alpha frames
    ],
)
def test_models_take_the_data_clip_shape_and_return_logits(model: str, pools: list) -> None:
    """The head pools the whole final feature map of a training clip (4 frames, 64 px: 2 x 2
    after stride 32), larger test crops still give one score per class, and the scores are
    logits (pytorchvideo's X3D head would apply a softmax)."""
    cfg = compose_config([*DEMO, f"model={model}", "data.input_size=64"])
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    kernels = [tuple(m.kernel_size) for m in net.modules() if isinstance(m, nn.AvgPool3d)]
    assert kernels == pools
    nn.init.normal_(classifier(net).weight, std=1.0)
    with torch.no_grad():
        for size in (64, 80):
            logits = net(random_clips(cfg, 2, size))
            assert logits.shape == (2, 12)
            assert logits.min() < 0 and not torch.allclose(logits.sum(1), torch.ones(2))


def test_slowfast_asks_for_the_pathways_of_the_data_option() -> None:
    cfg = compose_config([*DEMO, "model=slowfast_r50"])
    net = build_model(cfg)
    with pytest.raises(TypeError, match=r"\[slow, fast\].*data\.slowfast_alpha=4"):
        net(torch.randn(1, 3, 4, 32, 32))
    fast = torch.randn(1, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="4 slow and 4 fast frames"):
        net([fast, fast])
    clips = random_clips(cfg, 2, 32)
    net.eval()(clips)
    assert [c.shape[2] for c in clips] == [1, 4]  # the caller's list is left as it was
    with pytest.raises(ConfigError, match=r"model: model\.slowfast_alpha=3.*num_segments=4"):
        build_model(compose_config([*DEMO, "model=slowfast_r50", "model.slowfast_alpha=3"]))


def test_a_key_the_builder_does_not_take_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"model\.partial_bn: expected a keyword"):
        build_model(compose_config(["+experiment=rnl_sthv1", "model=x3d_s"]))


def test_weights_load_from_a_local_file_and_refit_another_classifier(tmp_path: Path) -> None:
    """A pytorchvideo / PySlowFast style file (``model_state``, ``model.`` prefix) with another
    number of classes: every other tensor loads, the classifier keeps its initialisation."""
    torch.manual_seed(0)
    source = build_model(compose_config([*DEMO, "model=x3d_s", "data.num_classes=5"]))
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model_state": state, "cfg": "X3D_S.yaml"}, tmp_path / "x3d_s.pyth")
    torch.manual_seed(1)
    fresh = build_model(compose_config([*DEMO, "model=x3d_s"]))
    torch.manual_seed(1)
    loaded = build_model(
        compose_config([*DEMO, "model=x3d_s", f"model.weights={tmp_path / 'x3d_s.pyth'}"])
    )
    prefix = loaded.classifier_prefix
    for key, value in loaded.state_dict().items():
        expected = fresh.state_dict()[key] if key.startswith(prefix) else source.state_dict()[key]
        assert torch.equal(value, expected), key
    with pytest.raises(FileNotFoundError, match=r"model\.weights=.*nothing is downloaded"):
        build_model(compose_config([*DEMO, "model=x3d_s", "model.weights=X3D_S.pyth"]))


def test_fine_tuning_refits_the_pytorchvideo_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model(compose_config([*DEMO, "model=x3d_s", "data.num_classes=5"]))
    torch.save(source.state_dict(), tmp_path / "x3d_s.pt")
    torch.manual_seed(1)
    model = build_model(compose_config([*DEMO, "model=x3d_s"]))
    head = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(model.classifier_prefix)
    }
    load_finetune_weights(model, tmp_path / "x3d_s.pt")
    for key, value in model.state_dict().items():
        expected = head[key] if key in head else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_optimiser_groups_find_the_pytorchvideo_classifier() -> None:
    net = build_model(compose_config([*DEMO, "model=x3d_s"]))
    optimizer = create_sgd(net, lr=0.1, fc_weight_lr_mult=5.0, fc_bias_lr_mult=10.0)
    groups = {group["name"]: group for group in optimizer.param_groups}
    head = classifier(net)
    assert [p is head.weight for p in groups["fc_weight"]["params"]] == [True]
    assert [p is head.bias for p in groups["fc_bias"]["params"]] == [True]
    assert groups["fc_weight"]["lr"] == pytest.approx(0.5)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(net.parameters()))


@pytest.mark.parametrize(
    ("model", "protocol", "views"), [("x3d_s", "1x1", 1), ("slowfast_r50", "1x3", 3)]
)
def test_demo_recipe_trains_and_evaluates_a_baseline(
    tiny_dataset: Path, tmp_path: Path, model: str, protocol: str, views: int
) -> None:
    """``+experiment=demo model=...`` with the trainer, checkpoints and tools/test.py as is
    (SlowFast: its [slow, fast] input through training, validation, the zoo's 1 clip x 3 crops
    test protocol and single-video classification)."""
    run_dir = tmp_path / "run"
    cfg = compose_config(tiny_run_overrides(tiny_dataset, run_dir, f"model={model}"))
    metrics = Trainer(cfg, init_distributed("cpu"), run_dir).fit()
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["num_videos"] == 12 and written["top1"] == pytest.approx(metrics["top1"])

    clips, crops = protocol.split("x")
    tested = test_tool.main(
        [f"ckpt={run_dir / 'last.pt'}", f"protocol.clips={clips}", f"protocol.crops={crops}"]
    )
    assert tested["num_videos"] == 12 and tested["protocol"]["views"] == views
    report = run_dir / f"eval_last_{protocol}" / "predictions.csv"
    assert len(report.read_text().splitlines()) == 1 + 12

    ranked = rnlvideo.classify(run_dir / "last.pt", tiny_dataset / "frames" / "4", topk=3)
    assert len(ranked) == 3 and ranked[0].probability >= ranked[-1].probability


def test_converter_refuses_pytorchvideo_models_clearly(tmp_path: Path, caplog) -> None:
    net = build_model(compose_config([*DEMO, "model=x3d_s"]))
    with pytest.raises(OfficialCheckpointError, match="not a TSM ResNet"):
        convert_official_state_dict({}, net)
    with pytest.raises(SystemExit) as exit_info:
        convert_official.main([str(tmp_path / "any.pth"), str(tmp_path / "out.pt"), "model=x3d_s"])
    assert exit_info.value.code == 2
    assert "create_x3d builds a pytorchvideo.models.net.Net, not a TSM ResNet" in caplog.text
    assert "model.weights=PATH" in caplog.text
    assert not (tmp_path / "out.pt").exists()


def test_flops_tool_counts_the_slowfast_pathways(capsys) -> None:
    flops_tool.main(["+experiment=slowfast_sthv1"])
    out = capsys.readouterr().out
    assert "one view (1, 3, 8, 224, 224) + (1, 3, 32, 224, 224), 174 classes" in out
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    assert total[1] == "34,045,558"  # the pytorchvideo zoo's Something-Something V2: 34.04 M
    assert float(total[2]) == pytest.approx(50.31, abs=0.005)

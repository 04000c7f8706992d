"""Checkpoints carry data, never code: stored configs are validated before anything is built.

Also: the config schema (unknown keys, wrong types and values fail at composition with the key
named), self-contained checkpoints (no ``configs/``, no network) and the Python API.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

import rnlvideo
from rnlvideo.checkpoint_format import checkpoint_metadata, load_checkpoint
from rnlvideo.config import (
    ConfigError,
    UntrustedTargetError,
    build_model,
    compose_config,
    portable_config,
    validate_config,
)
from rnlvideo.config import compose as compose_module
from rnlvideo.data import load_frame, read_categories
from rnlvideo.files import save_atomic
from tests.conftest import tiny_run_overrides
from tests.test_evaluation import save_checkpoint
from tools import predict as predict_tool
from tools import test as test_tool


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    run_dir = module_tmp_path
    return save_checkpoint(run_dir / "last.pt", tiny_run_overrides(tiny_dataset, run_dir))


def crafted(checkpoint: Path, destination: Path, victim: Path, legacy: bool) -> Path:
    """``checkpoint`` whose stored config asks to open (truncate) and torch.save ``victim``."""
    state = load_checkpoint(checkpoint)
    config = state["config"]
    config["model"]["extra"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    config["model"]["extra2"] = {"_target_": "torch.save", "obj": 1, "f": str(victim)}
    if legacy:  # today's-main layout: a resolved YAML string and the overrides list
        for key in ("format_version", "class_names", "num_classes", "versions"):
            state.pop(key)
        state["config"] = OmegaConf.to_yaml(OmegaConf.create(config), resolve=True)
        state["overrides"] = [
            f"+model.extra._target_=builtins.open +model.extra.file={victim}",
            "+model.extra2._target_=torch.save",
        ]
    save_atomic(state, destination)
    return destination


@pytest.mark.parametrize("legacy", [False, True])
def test_a_crafted_checkpoint_is_refused_by_the_tools_and_creates_no_file(
    checkpoint: Path, tiny_dataset: Path, tmp_path: Path, caplog, legacy: bool
) -> None:
    victim = tmp_path / "victim.txt"
    bad = crafted(checkpoint, tmp_path / "bad.pt", victim, legacy)
    before = sorted(p.name for p in tmp_path.iterdir())
    for tool, args in (
        (test_tool, [f"ckpt={bad}"]),
        (predict_tool, [f"ckpt={bad}", f"input={tiny_dataset / 'frames' / '0'}"]),
    ):
        caplog.clear()
        with pytest.raises(SystemExit) as stop:
            tool.main(args)
        assert stop.value.code == 2
        assert "model.extra._target_='builtins.open'" in caplog.text
        assert "--trust-code" in caplog.text
    assert not victim.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report, no file at all

    with pytest.raises(UntrustedTargetError, match=r"model\.extra2?\._target_"):
        rnlvideo.load_model(bad)
    assert not victim.exists()


def test_a_stored_config_may_not_call_resolvers(checkpoint: Path, tmp_path: Path) -> None:
    state = load_checkpoint(checkpoint)
    state["config"]["data"]["root"] = "${oc.env:HOME}"
    save_atomic(state, tmp_path / "env.pt")
    with pytest.raises(ConfigError, match=r"data\.root='\$\{oc\.env:HOME\}'.*resolvers"):
        rnlvideo.load_model(tmp_path / "env.pt")


def test_trust_code_allows_a_builder_of_ones_own(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_config(tiny_run_overrides(tiny_dataset, tmp_path))
    container = OmegaConf.to_container(cfg, resolve=False)
    container["model"] = {"_target_": "torchvision.models.resnet18", "num_classes": 12}
    with pytest.raises(UntrustedTargetError, match="torchvision.models.resnet18"):
        validate_config(container)
    assert validate_config(container, trust_code=True).model.num_classes == 12


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.amp=bf61", r"train\.amp='bf61': expected one of null, 'bf16', 'fp16'"),
        ("protocol.clips=-1", r"protocol\.clips=-1: expected a value >= 1"),
        ("+train.lr=0.1", r"train\.lr: Key 'lr' not in 'TrainConfig'"),
        ("+eval.on_eror=raise", r"eval\.on_eror: Key 'on_eror' not in 'EvalConfig'"),
        ("model.depth=fifty", r"model\.depth='fifty': expected int"),
        ("+model.extra._target_=builtins.open", r"model\.extra\._target_='builtins.open'"),
        ("optim.lr=0", r"optim\.lr=0\.0: expected a value > 0"),
        ("schedule.policy=linear", r"schedule\.policy='linear': expected one of"),
        ("+data.train.num_segment=4", r"data\.train\.num_segment: unknown key"),
    ],
)
def test_bad_keys_and_values_fail_at_composition_naming_the_key(
    tiny_dataset: Path, tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_config(tiny_run_overrides(tiny_dataset, tmp_path, override))


def test_a_type_error_fails_in_hydra_naming_the_key(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as failure:
        compose_config(tiny_run_overrides(tiny_dataset, tmp_path, "train.epochs=many"))
    assert "train.epochs" in f"{failure.value} {failure.value.__cause__}"


def test_evaluation_never_reads_configs(checkpoint: Path, monkeypatch, tmp_path: Path) -> None:
    """A demo checkpoint evaluates to the same top-1 whatever ``configs/`` says now."""
    before = rnlvideo.evaluate(checkpoint, report=False)
    edited = tmp_path / "configs"
    edited.mkdir()  # an empty config directory: every experiment "edited away"
    monkeypatch.setattr(compose_module, "CONFIG_DIR", edited)
    with pytest.raises(Exception, match="config"):
        compose_config(["+experiment=demo"])
    after = rnlvideo.evaluate(checkpoint, report=False)
    assert after["top1"] == before["top1"] and after["num_videos"] == before["num_videos"]


def test_overrides_of_a_stored_config(checkpoint: Path) -> None:
    metrics = rnlvideo.evaluate(
        checkpoint, protocol="2x3", overrides=["eval.batch_size=5", "protocol.clips=1"]
    )
    assert metrics["views"] == "1x3" and metrics["protocol"]["crops"] == 3
    with pytest.raises(ConfigError, match="data=sthv1: a checkpoint's data is the one"):
        rnlvideo.evaluate(checkpoint, overrides=["data=sthv1"])
    with pytest.raises(ConfigError, match="unknown key 'eval.batchsize'"):
        rnlvideo.evaluate(checkpoint, overrides=["eval.batchsize=5"])


def test_python_api_matches_the_tools(checkpoint: Path, tiny_dataset: Path, capsys) -> None:
    model = rnlvideo.load_model(checkpoint)
    names = read_categories(tiny_dataset / "category.txt")
    assert model.class_names == names and not model.training
    metrics = rnlvideo.evaluate(model, report=False)
    from_tool = test_tool.main([f"ckpt={checkpoint}"])
    assert metrics["top1"] == from_tool["top1"] and metrics["num_videos"] == 12

    video = tiny_dataset / "frames" / "3"
    ranked = rnlvideo.classify(checkpoint, video, topk=3)
    assert [r.name for r in ranked] == [names[r.index] for r in ranked]
    assert ranked[0].probability >= ranked[1].probability >= ranked[2].probability
    frames = torch.stack([load_frame(p) for p in sorted(video.glob("*.jpg"))])
    from_tensor = rnlvideo.classify(model, frames, topk=3)
    assert [r.index for r in from_tensor] == [r.index for r in ranked]
    torch.testing.assert_close(
        torch.tensor([r.probability for r in from_tensor]),
        torch.tensor([r.probability for r in ranked]),
    )
    assert predict_tool.main([f"ckpt={checkpoint}", f"input={video}", "topk=3"]) == ranked


def test_a_format_1_checkpoint_still_loads(checkpoint: Path, tmp_path: Path) -> None:
    state = load_checkpoint(checkpoint)
    config = OmegaConf.create(state["config"])
    legacy_config = OmegaConf.to_container(config, resolve=True)
    legacy_config["ckpt"] = None
    legacy_config["data"]["test_views"] = "1x1"
    legacy_config["data"]["test"] = {"_target_": "rnlvideo.engine.evaluation.protocol_dataset"}
    legacy_config["protocol"]["dataset"] = legacy_config["data"]["test"]
    legacy = {
        "model": state["model"],
        "config": OmegaConf.to_yaml(OmegaConf.create(legacy_config)),
        "overrides": state["config"]["overrides"],
        "progress": {"epoch": 3},
    }
    save_atomic(legacy, tmp_path / "old.pt")
    old = rnlvideo.evaluate(tmp_path / "old.pt", report=False)
    new = rnlvideo.evaluate(checkpoint, report=False)
    assert old["top1"] == new["top1"]
    # format 1 stored no class names: they come from the configured category file
    assert rnlvideo.load_model(tmp_path / "old.pt").class_names == state["class_names"]


@pytest.fixture()
def offline(monkeypatch, tmp_path: Path) -> Path:
    """An empty TORCH_HOME and no network: a download attempt fails loudly."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return home


def sthv1_layout(tiny_dataset: Path, root: Path) -> Path:
    """The tiny synthetic videos in Something-Something V1's layout (frames, lists)."""
    root.mkdir()
    (root / "20bn-something-something-v1").symlink_to(tiny_dataset / "frames")
    (root / "val_videofolder.txt").write_text((tiny_dataset / "val.txt").read_text())
    (root / "train_videofolder.txt").write_text((tiny_dataset / "train.txt").read_text())
    return root


def test_an_rnl_sthv1_checkpoint_loads_and_evaluates_offline(
    tiny_dataset: Path, tmp_path: Path, offline: Path
) -> None:
    cfg = compose_config(["+experiment=rnl_sthv1", f"data.root={tmp_path / 'nowhere'}"])
    assert cfg.model.weights == "ResNet50_Weights.IMAGENET1K_V1"  # would download if built
    model = build_model(cfg, load_weights=False)
    names = [f"class {i}" for i in range(174)]
    path = tmp_path / "rnl_sthv1.pt"
    save_atomic(
        {"model": model.state_dict(), **checkpoint_metadata(portable_config(cfg), names)}, path
    )

    loaded = rnlvideo.load_model(path)
    assert loaded.class_names == names and loaded.num_segments == 8
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    root = sthv1_layout(tiny_dataset, tmp_path / "sthv1")
    metrics = test_tool.main(
        [
            f"ckpt={path}",
            f"data.root={root}",
            "data.category_file=null",  # the layout has no category.txt: names are stored
            "data.input_size=32",
            "data.scale_size=37",
            "eval.num_workers=0",
            "eval.batch_size=4",
        ]
    )
    assert metrics["num_videos"] == 12
    assert (
        json.loads((tmp_path / "eval_rnl_sthv1_1x1" / "metrics.json").read_text())["top1"]
        == (metrics["top1"])
    )
    assert not any(offline.iterdir())  # nothing was downloaded


def test_imagenet_initialisation_from_a_local_file_offline(tmp_path: Path, offline: Path) -> None:
    """``model.weights=/path/resnet50.pth``: a torchvision state dict, read, never downloaded."""
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(imagenet.state_dict(), path)
    model = rnlvideo.build_model_from_config(["+experiment=rnl_sthv1", f"model.weights={path}"])
    for key, value in imagenet.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    assert not any(offline.iterdir())

"""Exports to ONNX and torch.export: exact at every batch size, metadata, refusals, predict.py.

The models are tiny (ResNet-18 at 32x32) but have random weights in which every part matters
(:func:`tools.benchmark_inference.make_nondegenerate`): the non-local blocks and channel gates
are not the identity and the logits are a few units, so a wrong export cannot pass the check.
An ONNX export takes tens of seconds on 2 cores, so there are two, shared by the tests: the
8-segment model with every non-local variant, and 16 segments. Both start from the same
torch.export capture as a ``.pt2``; the ``.pt2`` format itself is tested at 8 segments and on
the pytorchvideo models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import pytest
import torch
from torch import Tensor, nn

import rnlvideo
from rnlvideo.checkpoint_format import software_versions
from rnlvideo.config import UntrustedTargetError
from rnlvideo.data.pathways import with_pathways
from rnlvideo.deploy import (
    TOLERANCE,
    ExportedClassifier,
    ExportError,
    ExportMetadata,
    MetadataError,
    export_model,
    metadata_for,
    read_metadata,
)
from rnlvideo.deploy.checks import FP32_MARGIN, Comparison, check_clips
from rnlvideo.deploy.formats import PT2_METADATA_FILE
from rnlvideo.models import ChannelGate, NLBlock, RNLBlock, create_tsm_resnet
from tests.conftest import tiny_run_overrides
from tests.test_trust import crafted
from tools import export as export_tool
from tools import predict as predict_tool
from tools.benchmark_inference import random_checkpoint

EVERY_VARIANT = (
    "placement.blocks=[{stage:layer2,block:0,kind:'cg+rnl',kernel_size:[3,7,7]},"
    "{stage:layer2,block:1,kind:rnl,kernel_size:[3,3,3]},{stage:layer3,block:0,kind:nl},"
    "{stage:layer3,block:1,kind:rnl,kernel_size:[1,1,1]},{stage:layer4,block:0,kind:cg}]"
)
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}


def tiny_checkpoint(dataset: Path, directory: Path, *extra: str) -> Path:
    return random_checkpoint(tiny_run_overrides(dataset, directory, *extra), directory, seed=0)


def export_checked(checkpoint: Path | nn.Module, path: Path) -> Path:
    report = rnlvideo.export(checkpoint, path)
    assert [c.batch for c in report.comparisons] == [1, 3]
    assert all(c.within(TOLERANCE) for c in report.comparisons)
    return report.path


@pytest.fixture(scope="module")
def checkpoint_8f(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    """8 segments, every non-local variant: RNL 3x7x7 (after a channel gate), 3x3x3, 1x1x1,
    NL, and a channel gate alone."""
    directory = module_tmp_path / "export_8f"
    directory.mkdir()
    return tiny_checkpoint(tiny_dataset, directory, "data.num_segments=8", EVERY_VARIANT)


@pytest.fixture(scope="module")
def exports_8f(checkpoint_8f: Path, module_tmp_path: Path) -> dict[str, Any]:
    """The ONNX file (rnlvideo.export) and the .pt2 (tools/export.py, with what it printed)."""
    directory = module_tmp_path / "exported_8f"
    directory.mkdir()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        report = export_tool.main([f"ckpt={checkpoint_8f}", f"out={directory / 'model.pt2'}"])
    return {
        "onnx": export_checked(checkpoint_8f, directory / "model.onnx"),
        "torch_export": report.path,
        "printed": printed.getvalue().splitlines(),
        "report": report,
    }


@pytest.fixture(scope="module")
def model_16f(tiny_dataset: Path, module_tmp_path: Path) -> nn.Module:
    """16 segments, the demo's blocks (channel gate + 3x7x7 RNL, 3x3x3 RNL)."""
    directory = module_tmp_path / "export_16f"
    directory.mkdir()
    return rnlvideo.load_model(tiny_checkpoint(tiny_dataset, directory, "data.num_segments=16"))


@pytest.fixture(scope="module")
def onnx_16f(model_16f: nn.Module, module_tmp_path: Path) -> Path:
    return export_checked(model_16f, module_tmp_path / "exported_16f.onnx")


@functools.cache
def runner_for(path: Path) -> Callable[[Tensor], Tensor]:
    """The exported file run the way a user runs it: onnxruntime, or torch.export.load."""
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda clips: torch.from_numpy(session.run(["logits"], {"clips": clips.numpy()})[0])
    module = torch.export.load(path).module()
    return torch.no_grad()(module)


def run_file(path: Path, clips: Tensor) -> Tensor:
    return runner_for(path)(clips)


def within_tolerance(path: Path, model: nn.Module, batch: int) -> bool:
    """The file's logits against the eager model's on other clips than the export checked."""
    clips = check_clips(read_metadata(path).input_shape, batch, seed=7)
    with torch.no_grad():
        expected = model(clips)
    got = run_file(path, clips)
    assert got.shape == expected.shape == (batch, len(model.class_names))
    return Comparison(
        batch, (got - expected).abs().max().item(), expected.abs().max().item()
    ).within(TOLERANCE)


def test_the_test_model_has_every_block_variant_and_none_is_the_identity(checkpoint_8f: Path):
    model = rnlvideo.load_model(checkpoint_8f)
    blocks = {
        n: m for n, m in model.named_modules() if isinstance(m, RNLBlock | NLBlock | ChannelGate)
    }
    kernels = sorted(m.kernel_size for m in blocks.values() if isinstance(m, RNLBlock))
    assert kernels == [(1, 1, 1), (3, 3, 3), (3, 7, 7)]
    assert sum(isinstance(m, NLBlock) for m in blocks.values()) == 1
    assert sum(isinstance(m, ChannelGate) for m in blocks.values()) == 2
    clips = check_clips(lambda n: (n, 3, 8, 32, 32), 2)
    changes = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: changes.__setitem__(n, (o - i[0]).abs().max()))
        for n, m in blocks.items()
    ]
    with torch.no_grad():
        logits = model(clips)
    for hook in hooks:
        hook.remove()
    assert all(change > 0.1 for change in changes.values()), changes
    assert 1 < logits.std() < 20  # logits of a few units, as a trained classifier's


@pytest.mark.parametrize("format", list(SUFFIXES))
def test_one_file_runs_batch_1_2_and_3_as_the_eager_model(
    checkpoint_8f: Path, exports_8f: dict[str, Any], format: str
):
    model = rnlvideo.load_model(checkpoint_8f)
    for batch in (1, 2, 3):
        assert within_tolerance(exports_8f[format], model, batch)
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(exports_8f[format]))
        assert session.get_inputs()[0].shape == ["batch", 3, 8, 32, 32]
        assert session.get_outputs()[0].shape == ["batch", 12]


def test_16_segments(model_16f: nn.Module, onnx_16f: Path):
    assert read_metadata(onnx_16f).num_segments == 16  # exported from a loaded model
    for batch in (1, 2, 3):
        assert within_tolerance(onnx_16f, model_16f, batch)


@pytest.mark.parametrize("format", list(SUFFIXES))
def test_the_metadata_round_trips(checkpoint_8f: Path, exports_8f: dict[str, Any], format: str):
    model = rnlvideo.load_model(checkpoint_8f)
    metadata = read_metadata(exports_8f[format])
    assert metadata == metadata_for(model.cfg, model.class_names)
    assert metadata.class_names == model.class_names and len(model.class_names) == 12
    assert (metadata.num_segments, metadata.crop_size, metadata.scale_size) == (8, 32, 37)
    assert metadata.input_layout == "(N, 3, T, H, W)"
    assert metadata.sampling == "tsn_test"
    assert metadata.protocol == {"clips": 1, "crops": 1, "sampling": "auto", "crop_size": None}
    assert metadata.mean == [0.485, 0.456, 0.406] and metadata.std == [0.229, 0.224, 0.225]
    assert metadata.rnlvideo_version == rnlvideo.__version__
    assert metadata.git_commit == software_versions()["git_commit"]


def test_a_runtime_reads_the_onnx_metadata_without_rnlvideo(exports_8f: dict[str, Any]):
    session = onnxruntime.InferenceSession(str(exports_8f["onnx"]))
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"])[0] == "class 0"
    assert props["input_layout"] == "(N, 3, T, H, W)" and props["sampling"] == "tsn_test"
    assert json.loads(props["num_segments"]) == 8 and json.loads(props["crop_size"]) == 32


def test_bad_metadata_is_refused_naming_the_file_and_key(
    exports_8f: dict[str, Any], tmp_path: Path
):
    proto = onnx.load(str(exports_8f["onnx"]))
    for prop in proto.metadata_props:
        if prop.key == "num_segments":
            prop.value = "-8"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(MetadataError, match=r"bad\.onnx: metadata num_segments=-8: expected"):
        read_metadata(tmp_path / "bad.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(MetadataError, match=r"bare\.onnx: not an rnlvideo export"):
        ExportedClassifier(tmp_path / "bare.onnx")


def with_metadata(source: Path, target: Path, **values: str) -> Path:
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key in values:
            prop.value = values[prop.key]
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize(
    "key, value",
    [
        ("val_sampling", "dense_anything"),
        ("mean", "[NaN, 0.4, 0.4]"),
        ("std", "[0.2, 0.2, 0]"),
        ("protocol", '{"clips": 1, "crops": 2, "sampling": "auto", "crop_size": null}'),
        ("class_names", '["a", 3]'),
    ],
)
def test_every_metadata_key_is_checked(
    exports_8f: dict[str, Any], tmp_path: Path, key: str, value: str
):
    bad = with_metadata(exports_8f["onnx"], tmp_path / "bad.onnx", **{key: value})
    with pytest.raises(MetadataError, match=rf"bad\.onnx: metadata {key}=.*: expected"):
        ExportedClassifier(bad)


def test_class_names_must_match_the_graphs_logits(exports_8f: dict[str, Any], tmp_path: Path):
    names = read_metadata(exports_8f["onnx"]).class_names
    fewer = with_metadata(
        exports_8f["onnx"], tmp_path / "fewer.onnx", class_names=json.dumps(names[:-1])
    )
    with pytest.raises(MetadataError, match=r"fewer\.onnx: the graph's outputs .*one logit per"):
        ExportedClassifier(fewer)


def test_a_hostile_onnx_file_cannot_fake_predicts_output(
    exports_8f: dict[str, Any], tiny_dataset: Path, tmp_path: Path, capsys, caplog
):
    names = [f"class {i}" for i in range(len(read_metadata(exports_8f["onnx"]).class_names))]
    names = ["\x1b[2J 99. 1.000  fake\nline"] + names[1:]
    hostile = with_metadata(
        exports_8f["onnx"], tmp_path / "hostile.onnx", class_names=json.dumps(names)
    )
    video = tiny_dataset / "frames" / "4"
    predict_tool.main([f"model={hostile}", f"input={video}", f"topk={len(names)}"])
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\\x1b[2J" in printed
    assert len(printed.splitlines()) == len(names) + 1  # no line of the name's own

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(SystemExit) as stop:
        predict_tool.main([f"model={garbage}", f"input={video}"])
    assert stop.value.code == 2
    assert "garbage.onnx: not a loadable ONNX model" in caplog.text


@pytest.mark.parametrize("protocol", [[], ["protocol=2x3", "protocol.crop_size=32"]])
def test_predict_on_the_onnx_file_gives_the_checkpoints_top5(
    checkpoint_8f: Path, exports_8f: dict[str, Any], tiny_dataset: Path, protocol, capsys
):
    video = f"input={tiny_dataset / 'frames' / '4'}"
    from_checkpoint = predict_tool.main([f"ckpt={checkpoint_8f}", video, *protocol])
    from_onnx = predict_tool.main([f"model={exports_8f['onnx']}", video, *protocol])
    assert [e.index for e in from_onnx] == [e.index for e in from_checkpoint]
    assert [e.name for e in from_onnx] == [e.name for e in from_checkpoint]
    for a, b in zip(from_onnx, from_checkpoint, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-5)
    printed = capsys.readouterr().out.split(f"{tiny_dataset / 'frames' / '4'}:")
    assert printed[1] == printed[2]  # the same lines


def test_predict_refuses_crops_the_onnx_model_does_not_take(
    exports_8f: dict[str, Any], tiny_dataset: Path, caplog
):
    with pytest.raises(SystemExit) as stop:
        predict_tool.main(
            [
                f"model={exports_8f['onnx']}",
                f"input={tiny_dataset / 'frames' / '4'}",
                "protocol=2x3",
            ]
        )
    assert stop.value.code == 2
    assert "crops 37x37 pixels but the exported model takes 32x32" in caplog.text
    assert "protocol.crop_size=32" in caplog.text


def test_without_onnxruntime_the_tools_say_how_to_install_it(
    checkpoint_8f: Path, exports_8f: dict[str, Any], tiny_dataset: Path, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as stop:
        predict_tool.main([f"model={exports_8f['onnx']}", f"input={tiny_dataset / 'frames' / '4'}"])
    assert stop.value.code == 2
    assert "onnxruntime is not installed" in caplog.text and "[deploy]" in caplog.text
    with pytest.raises(ImportError, match=r"format=onnx needs onnxruntime.*\[deploy\]"):
        rnlvideo.export(checkpoint_8f, exports_8f["onnx"].with_name("unused.onnx"))


def test_a_crafted_checkpoint_is_refused_by_export_as_by_load_model(
    checkpoint_8f: Path, tmp_path: Path, caplog
):
    victim = tmp_path / "victim.txt"
    bad = crafted(checkpoint_8f, tmp_path / "bad.pt", victim, legacy=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UntrustedTargetError) as by_load_model:
        rnlvideo.load_model(bad)
    for format, suffix in SUFFIXES.items():
        with pytest.raises(UntrustedTargetError) as by_export:
            rnlvideo.export(bad, tmp_path / f"out{suffix}", format=format)
        assert str(by_export.value) == str(by_load_model.value)
        caplog.clear()
        with pytest.raises(SystemExit) as stop:
            export_tool.main([f"ckpt={bad}", f"out={tmp_path / f'out{suffix}'}"])
        assert stop.value.code == 2
        assert str(by_load_model.value) in caplog.text and "--trust-code" in caplog.text
    assert not victim.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no export, no file at all


class DataDependent(nn.Module):
    """Branches on a value of its input: torch.export cannot capture it."""

    def forward(self, x: Tensor) -> Tensor:
        return x if x.sum() > 0 else -x


class BakesTheBatchSize(nn.Module):
    """Reshapes with the batch size as a Python number: a graph for one batch size only."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(int(x.shape[0]), -1).reshape(x.shape)


class DiffersWhenExported(nn.Module):
    """Computes something else under export: a stand-in for a silently wrong exporter."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 1.01 if torch.compiler.is_exporting() else x


def model_with_part(checkpoint: Path, part: nn.Module) -> tuple[nn.Module, ExportMetadata]:
    """A TSM-R18 of 4 segments whose first non-local block is followed by ``part``."""
    torch.manual_seed(0)
    block = {"stage": "layer1", "block": 0, "kind": "rnl", "kernel_size": [1, 1, 1]}
    model = create_tsm_resnet(depth=18, num_classes=12, num_segments=4, nonlocal_blocks=[block])
    model.nonlocal_blocks["layer1_0"].append(part)
    trained = rnlvideo.load_model(checkpoint)
    metadata = metadata_for(trained.cfg, trained.class_names)
    return model.eval(), dataclasses.replace(metadata, num_segments=4)


@pytest.mark.parametrize("part", [DataDependent, BakesTheBatchSize])
def test_a_part_that_cannot_be_captured_is_named(
    checkpoint_8f: Path, tmp_path: Path, part: type[nn.Module]
):
    model, metadata = model_with_part(checkpoint_8f, part())
    with pytest.raises(ExportError) as failure:
        export_model(model, tmp_path / "model.pt2", None, metadata)
    assert failure.value.part == "nonlocal_blocks.layer1_0.1"
    assert "torch.export could not capture the model" in str(failure.value)
    assert f"nonlocal_blocks.layer1_0.1 ({part.__name__})" in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_differs_is_refused_and_the_part_named(checkpoint_8f: Path, tmp_path: Path):
    model, metadata = model_with_part(checkpoint_8f, DiffersWhenExported())
    (tmp_path / "model.pt2").write_bytes(b"an earlier export")
    with pytest.raises(ExportError) as failure:
        export_model(model, tmp_path / "model.pt2", "torch_export", metadata)
    error = failure.value
    assert [c.batch for c in error.comparisons] == [1, 3]
    assert not any(c.within(TOLERANCE) for c in error.comparisons)
    assert all(c.difference < math.inf for c in error.comparisons)
    assert error.comparisons[0].describe(TOLERANCE) in str(error)
    assert "the file was not written" in str(error)
    assert error.part == "nonlocal_blocks.layer1_0.1"
    assert "(DiffersWhenExported): its export differs from eager" in str(error)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]
    assert (tmp_path / "model.pt2").read_bytes() == b"an earlier export"


def test_a_model_less_exact_in_fp32_is_held_to_its_own_fp32_error():
    """Above the bound, an export passes only when it is as close to the fp64 logits as eager
    fp32 is (within FP32_MARGIN = 2 times)."""
    beyond_the_bound = Comparison(1, 1.4e-2, 9.0)
    assert beyond_the_bound.allowed(TOLERANCE) == pytest.approx(9e-4)
    assert not beyond_the_bound.within(TOLERANCE)
    as_exact = dataclasses.replace(beyond_the_bound, exact_difference=1.5e-2, eager_error=1.3e-2)
    assert as_exact.within(TOLERANCE)
    assert "from the fp64 logits: export 0.015, eager fp32 0.013" in as_exact.describe(TOLERANCE)
    wrong = dataclasses.replace(beyond_the_bound, exact_difference=1.4e-2, eager_error=6e-5)
    assert not wrong.within(TOLERANCE)


class RoundedDifferently(nn.Module):
    """Rounds its input to a grid through fp32 additions, ``(x + 2**e) - 2**e`` (a step of
    ``2**(e - 23)``): with ``eager_exponent`` in eager mode, ``export_exponent`` under export.
    Both are correct and exact in fp64; they differ by fp32 rounding alone, by far more than
    the bound when the grid is coarse: a model less exact in fp32 than the bound allows."""

    def __init__(self, eager_exponent: int, export_exponent: int) -> None:
        super().__init__()
        self.eager_exponent = eager_exponent
        self.export_exponent = export_exponent

    def forward(self, x: Tensor) -> Tensor:
        exporting = torch.compiler.is_exporting()
        offset = 2.0 ** (self.export_exponent if exporting else self.eager_exponent)
        return (x + offset) - offset


def test_an_export_as_exact_as_eager_fp32_passes_beyond_the_bound(
    checkpoint_8f: Path, tmp_path: Path
):
    """Eager rounds to steps of 2**-1, the export to 2**-4: the logits differ by more than the
    bound, but the export is nearer the exact (fp64) logits than eager fp32 is."""
    model, metadata = model_with_part(checkpoint_8f, RoundedDifferently(22, 19))
    report = export_model(model, tmp_path / "model.pt2", None, metadata, locate=False)
    assert (tmp_path / "model.pt2").is_file()
    for c in report.comparisons:
        assert c.difference > c.allowed(TOLERANCE)
        assert c.exact_difference < c.eager_error and c.within(TOLERANCE)


def test_an_export_less_exact_than_eager_fp32_is_refused(checkpoint_8f: Path, tmp_path: Path):
    """The other way round: the export is 8 times coarser than eager, so further from the
    fp64 logits than FP32_MARGIN times eager fp32."""
    model, metadata = model_with_part(checkpoint_8f, RoundedDifferently(19, 22))
    with pytest.raises(ExportError) as failure:
        export_model(model, tmp_path / "model.pt2", None, metadata, locate=False)
    for c in failure.value.comparisons:
        assert c.difference > c.allowed(TOLERANCE)
        assert c.exact_difference > FP32_MARGIN * c.eager_error
    assert "from the fp64 logits" in str(failure.value) and list(tmp_path.iterdir()) == []


def test_a_wrong_export_is_also_measured_against_fp64(checkpoint_8f: Path, tmp_path: Path):
    model, metadata = model_with_part(checkpoint_8f, DiffersWhenExported())
    with pytest.raises(ExportError) as failure:
        export_model(model, tmp_path / "model.pt2", None, metadata, locate=False)
    for comparison in failure.value.comparisons:
        assert comparison.eager_error < 1e-4 < comparison.exact_difference
    assert failure.value.part is None and list(tmp_path.iterdir()) == []


def test_the_tool_prints_the_measured_differences_of_a_refused_export(
    checkpoint_8f: Path, tmp_path: Path, monkeypatch, capsys
):
    comparisons = [Comparison(1, 0.25, 2.0), Comparison(3, 0.5, 4.0)]

    def refuse(*args, **kwargs):
        raise ExportError("differs", part="head", comparisons=comparisons)

    monkeypatch.setattr(rnlvideo, "export", refuse)
    with pytest.raises(SystemExit) as stop:
        export_tool.main([f"ckpt={checkpoint_8f}", f"out={tmp_path / 'm.onnx'}"])
    assert stop.value.code == export_tool.EXPORT_FAILED
    assert capsys.readouterr().out.splitlines() == [
        "batch 1: largest |logit difference| 0.25 (largest |logit| 2, allowed 0.0002)",
        "batch 3: largest |logit difference| 0.5 (largest |logit| 4, allowed 0.0004)",
    ]


def test_the_tool_exports_and_prints_the_check(exports_8f: dict[str, Any]):
    report = exports_8f["report"]
    assert report.format == "torch_export" and report.path == exports_8f["torch_export"]
    assert all(c.within(TOLERANCE) for c in report.comparisons)
    printed = exports_8f["printed"]
    assert printed[:2] == [c.describe(TOLERANCE) for c in report.comparisons]
    assert printed[-1].startswith("torch_export export checked with torch.export.load")
    assert printed[-1].endswith(f"wrote {report.path}")
    with zipfile.ZipFile(report.path) as archive:
        assert any(name.endswith(f"extra/{PT2_METADATA_FILE}") for name in archive.namelist())


@pytest.mark.parametrize(
    "model",
    [
        ["model=x3d_s", "model.depth_factor=0.5"],  # fewer blocks: the same kinds of layers
        ["model=slowfast_r50", "model.model_depth=18", "data.num_segments=8"],  # 2 slow frames
    ],
    ids=["x3d", "slowfast"],
)
def test_the_pytorchvideo_baselines_export(model: list[str], tiny_dataset: Path, tmp_path: Path):
    overrides = tiny_run_overrides(tiny_dataset, tmp_path, *model)
    checkpoint = random_checkpoint(overrides, tmp_path, seed=0)
    report = rnlvideo.export(checkpoint, tmp_path / "model.pt2")
    assert all(c.within(TOLERANCE) for c in report.comparisons)
    eager = rnlvideo.load_model(checkpoint)
    frames = read_metadata(report.path).num_segments
    clips = check_clips(lambda n: (n, 3, frames, 32, 32), 2, seed=7)
    with torch.no_grad():
        expected = eager(with_pathways(clips, eager.cfg.data.slowfast_alpha))
    difference = (run_file(report.path, clips) - expected).abs().max().item()
    assert Comparison(2, difference, expected.abs().max().item()).within(TOLERANCE)


def test_the_format_follows_the_suffix_or_is_named(checkpoint_8f: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"model\.bin: give format= \(onnx or torch_export\)"):
        rnlvideo.export(checkpoint_8f, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="format='tflite'"):
        rnlvideo.export(checkpoint_8f, tmp_path / "model.onnx", format="tflite")
    assert list(tmp_path.iterdir()) == []


def test_the_tool_takes_locate_true_or_false_only(
    checkpoint_8f: Path, tmp_path: Path, monkeypatch, caplog
):
    seen = []
    monkeypatch.setattr(rnlvideo, "export", lambda *args, **kwargs: seen.append(kwargs["locate"]))
    for value, expected in (("false", False), ("True", True)):
        with contextlib.suppress(AttributeError):  # the fake export returns no report
            export_tool.main(
                [f"ckpt={checkpoint_8f}", f"out={tmp_path / 'm.pt2'}", f"locate={value}"]
            )
        assert seen.pop() is expected
    with pytest.raises(SystemExit) as stop:
        export_tool.main([f"ckpt={checkpoint_8f}", f"out={tmp_path / 'm.pt2'}", "locate=no"])
    assert stop.value.code == 2 and "locate=no: expected true or false" in caplog.text
    assert list(tmp_path.iterdir()) == []

"""Test protocols, evaluation outputs, exact distributed evaluation, ensembles (tools/test.py)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from rnlvideo.checkpoint_format import checkpoint_metadata
from rnlvideo.config import ConfigError, build_model, compose_config, portable_config
from rnlvideo.data import read_categories
from rnlvideo.engine.evaluation import (
    Predictions,
    average_predictions,
    prediction_metrics,
    view_scores,
)
from rnlvideo.engine.protocols import TestProtocol, build_test_dataset
from rnlvideo.engine.reports import CONFUSION_DPI, CONFUSION_FIGURE_INCHES
from rnlvideo.files import save_atomic
from tests.conftest import tiny_run_overrides
from tools import test as test_tool

REPO = Path(__file__).resolve().parents[1]
NUM_VAL_VIDEOS = 12  # tiny_dataset: 12 classes x 1 validation video


def save_checkpoint(path: Path, overrides: list[str], seed: int = 0) -> Path:
    """An untrained model saved like the trainer saves one: weights, config, class names.

    The classifier gets a large random init so that predictions differ between videos.
    """
    torch.manual_seed(seed)
    cfg = compose_config(overrides)
    model = build_model(cfg)
    nn.init.normal_(model.head.fc.weight, std=0.5)
    names = read_categories(Path(cfg.data.category_file))
    state = {
        "model": model.state_dict(),
        "progress": {"epoch": 1},
        **checkpoint_metadata(portable_config(cfg), names),
    }
    save_atomic(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    run_dir = module_tmp_path
    return save_checkpoint(run_dir / "last.pt", tiny_run_overrides(tiny_dataset, run_dir))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("overrides", "views", "size", "sampling"),
    [
        (["protocol=1x1"], 1, 32, "tsn_test"),
        (["protocol=2x3"], 6, 37, "twice"),
        (["protocol=10x3"], 30, 37, "dense_test"),
        (["protocol=1x1", "protocol.crops=3"], 3, 37, "tsn_test"),
        (["protocol=2x3", "protocol.clips=4", "protocol.crops=1"], 4, 32, "dense_test"),
    ],
)
def test_protocols_give_their_views(tiny_dataset, tmp_path, overrides, views, size, sampling):
    cfg = compose_config(tiny_run_overrides(tiny_dataset, tmp_path, *overrides))
    clip, label = build_test_dataset(cfg)[0]
    expected = (3, 4, size, size) if views == 1 else (views, 3, 4, size, size)
    assert tuple(clip.shape) == expected
    protocol = TestProtocol.of(cfg).record()
    assert protocol["views"] == views and protocol["sampling"] == sampling


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["protocol.crops=2"], r"protocol.crops=2: expected one of 1, 3"),
        (["protocol.clips=0"], r"protocol.clips=0: expected a value >= 1"),
        (["protocol.sampling=uniform"], r"protocol.sampling='uniform': expected one of"),
    ],
)
def test_invalid_protocols_are_rejected_at_composition(tiny_dataset, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(tiny_run_overrides(tiny_dataset, tmp_path, *overrides))


def test_a_sampling_that_gives_another_clip_count_is_rejected(tiny_dataset, tmp_path):
    overrides = tiny_run_overrides(tiny_dataset, tmp_path, "protocol.sampling=twice")
    with pytest.raises(ValueError, match="does not give protocol.clips=1 clips"):
        build_test_dataset(compose_config(overrides))


def test_view_scores_average_views_in_chunks() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 5))
    clips = torch.randn(3, 6, 3, 2, 4, 4)  # (B, V, C, T, H, W)
    per_view = model(clips.flatten(0, 1)).view(3, 6, 5)
    torch.testing.assert_close(view_scores(model, clips, softmax=False), per_view.mean(1))
    torch.testing.assert_close(
        view_scores(model, clips, softmax=False, max_clips=4), per_view.mean(1)
    )
    torch.testing.assert_close(
        view_scores(model, clips, softmax=True, max_clips=5), per_view.softmax(-1).mean(1)
    )


def test_test_tool_writes_every_output(checkpoint: Path, tiny_dataset: Path) -> None:
    metrics = test_tool.main([f"ckpt={checkpoint}", "protocol=2x3"])
    out = checkpoint.parent / "eval_last_2x3"
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert written["num_videos"] == NUM_VAL_VIDEOS and written["views"] == "2x3"
    assert written["protocol"] == {
        "name": "2x3",
        "clips": 2,
        "crops": 3,
        "views": 6,
        "sampling": "twice",
        "scale_size": 37,
        "crop_size": 37,
    }
    assert written["checkpoints"] == [str(checkpoint)]
    assert 0 <= written["top1"] <= written["top5"] <= 100

    names = read_categories(tiny_dataset / "category.txt")
    per_class = read_csv(out / "per_class_accuracy.csv")
    assert [row["class_name"] for row in per_class] == names
    assert sum(int(row["num_videos"]) for row in per_class) == NUM_VAL_VIDEOS

    with (out / "confusion_matrix.csv").open() as f:
        rows = list(csv.reader(f))
    counts = torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]])
    assert counts.shape == (12, 12) and int(counts.sum()) == NUM_VAL_VIDEOS
    assert counts.sum(1).tolist() == [int(row["num_videos"]) for row in per_class]
    assert int(counts.trace()) == round(written["top1"] * NUM_VAL_VIDEOS / 100)

    side = CONFUSION_FIGURE_INCHES * CONFUSION_DPI
    assert matplotlib.image.imread(out / "confusion_matrix.png").shape[:2] == (side, side)

    predictions = read_csv(out / "predictions.csv")
    scores = torch.load(out / "scores.pt")
    assert len(predictions) == NUM_VAL_VIDEOS and scores["scores"].shape == (12, 12)
    for row, video_scores in zip(predictions, scores["scores"], strict=True):
        top5 = [int(row[f"pred_{i}"]) for i in range(1, 6)]
        assert top5 == video_scores.topk(5).indices.tolist()
        assert row["label_name"] == names[int(row["label"])]
    listed = [line.split()[0] for line in (tiny_dataset / "val.txt").read_text().splitlines()]
    assert [row["video"] for row in predictions] == listed

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert {"test_2x3/top1", "test_2x3/top5", "test_2x3/mean_class_acc"} <= set(
        events.Tags()["scalars"]
    )
    assert events.Scalars("test_2x3/top1")[0].value == pytest.approx(written["top1"])


def test_test_tool_without_arguments_uses_the_stored_config(checkpoint: Path) -> None:
    metrics = test_tool.main([f"ckpt={checkpoint}"])
    assert metrics["views"] == "1x1" and metrics["protocol"]["sampling"] == "tsn_test"
    assert (checkpoint.parent / "eval_last_1x1" / "metrics.json").is_file()


@pytest.fixture
def bad_val_root(tiny_dataset: Path, tmp_path: Path) -> Path:
    """The validation videos plus a video of 0-byte frames ("broken") and a missing one ("gone").

    ``val_bad.txt`` lists val.txt's first 11 videos with "broken" at index 2 and "gone" at 7.
    """
    frames = tmp_path / "frames"
    frames.mkdir()
    lines = (tiny_dataset / "val.txt").read_text().splitlines()[:11]
    for line in lines:
        (frames / line.split()[0]).symlink_to(tiny_dataset / "frames" / line.split()[0])
    (frames / "broken").mkdir()
    for number in range(1, 17):
        (frames / "broken" / f"{number:05d}.jpg").write_bytes(b"")
    lines[2:2] = ["broken 16 3"]
    lines[7:7] = ["gone 16 4"]
    (tmp_path / "val_bad.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def bad_val_overrides(root: Path) -> list[str]:
    return [f"data.val.root={root / 'frames'}", f"data.val.list_file={root / 'val_bad.txt'}"]


def test_a_bad_val_video_stops_evaluation_with_its_name(checkpoint, bad_val_root, caplog):
    # data.on_error governs training only: evaluation never substitutes a video.
    args = [f"ckpt={checkpoint}", *bad_val_overrides(bad_val_root), "data.on_error=resample"]
    with pytest.raises(SystemExit) as refused:
        test_tool.main([*args, f"out={bad_val_root / 'out'}"])
    assert refused.value.code == 2
    assert re.search(r"frame is an empty file \(0 bytes\): .*broken/", caplog.text)
    assert not (bad_val_root / "out").exists()


def test_exclude_leaves_bad_videos_out_of_the_metrics(checkpoint, tiny_dataset, bad_val_root):
    out = bad_val_root / "out"
    args = [f"ckpt={checkpoint}", "protocol=2x3", "eval.batch_size=4"]
    metrics = test_tool.main(
        [*args, *bad_val_overrides(bad_val_root), "eval.on_error=exclude", f"out={out}"]
    )
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert written["num_videos"] == 11 and written["num_excluded"] == 2
    assert written["excluded_videos"] == ["broken", "gone"]
    excluded = read_csv(out / "excluded_videos.csv")
    assert [(row["index"], row["video"]) for row in excluded] == [("2", "broken"), ("7", "gone")]
    assert "empty file" in excluded[0]["error"] and "frame not found" in excluded[1]["error"]
    predictions = read_csv(out / "predictions.csv")
    assert "broken" not in {row["video"] for row in predictions} and len(predictions) == 11

    # The scored videos have exactly the scores of a run over the good videos only.
    good = bad_val_root / "val_good.txt"
    good.write_text("".join((tiny_dataset / "val.txt").read_text().splitlines(True)[:11]))
    plain = test_tool.main([*args, f"data.val.list_file={good}", f"out={bad_val_root / 'plain'}"])
    assert plain["num_excluded"] == 0 and plain["excluded_videos"] == []
    torch.testing.assert_close(
        torch.load(out / "scores.pt")["scores"],
        torch.load(bad_val_root / "plain" / "scores.pt")["scores"],
    )
    for key in ("top1", "top5", "mean_class_acc"):
        assert written[key] == pytest.approx(plain[key])


def test_short_val_videos_are_left_out_and_counted(checkpoint, tiny_dataset, tmp_path):
    lines = (tiny_dataset / "val.txt").read_text().splitlines()
    root = tmp_path / "frames"
    root.mkdir()
    for line in lines:
        (root / line.split()[0]).symlink_to(tiny_dataset / "frames" / line.split()[0])
    (root / "short").symlink_to(tiny_dataset / "frames" / lines[0].split()[0])
    lines.append("short 2 5")  # a real folder listed with 2 frames
    short_list = tmp_path / "val_short.txt"
    short_list.write_text("\n".join(lines) + "\n")
    args = [
        f"ckpt={checkpoint}",
        f"data.val.root={root}",
        f"data.val.list_file={short_list}",
        f"out={tmp_path / 'o'}",
    ]
    assert test_tool.main(args)["num_videos"] == NUM_VAL_VIDEOS
    assert test_tool.main([*args, "data.min_frames=2"])["num_videos"] == NUM_VAL_VIDEOS + 1


def test_category_file_must_match_the_class_count(checkpoint, tmp_path, caplog):
    categories = tmp_path / "category.txt"
    categories.write_text("".join(f"class {i}\n" for i in range(11)))
    with pytest.raises(SystemExit) as refused:
        test_tool.main([f"ckpt={checkpoint}", f"data.category_file={categories}"])
    assert refused.value.code == 2
    assert "category.txt: 11 classes, data.num_classes is 12" in caplog.text


def test_two_processes_score_every_video_once_like_one(checkpoint, bad_val_root, tmp_path):
    # 11 good videos and 2 bad ones: the ranks get 7 and 6, each one bad video.
    common = [f"ckpt={checkpoint}", "protocol=2x3", "eval.on_error=exclude"]
    common += bad_val_overrides(bad_val_root)
    single = test_tool.main([*common, "eval.batch_size=3", f"out={tmp_path / 'one'}"])

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "tools/test.py",
            *common,
            "eval.batch_size=2",
            f"out={tmp_path / 'two'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "rank 0 of 2" in ddp.stderr
    one = torch.load(tmp_path / "one" / "scores.pt")
    two = torch.load(tmp_path / "two" / "scores.pt")
    scored = [i for i in range(13) if i not in (2, 7)]
    assert one["indices"].tolist() == two["indices"].tolist() == scored
    assert torch.equal(one["labels"], two["labels"])
    torch.testing.assert_close(two["scores"], one["scores"], rtol=0, atol=1e-5)
    distributed = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert distributed["num_videos"] == single["num_videos"] == 11
    assert distributed["excluded_videos"] == single["excluded_videos"] == ["broken", "gone"]
    for key in ("top1", "top5", "mean_class_acc"):
        assert distributed[key] == pytest.approx(single[key])


def test_an_ensemble_excludes_what_any_member_excluded() -> None:
    scores = torch.arange(12.0).view(4, 3)
    one = Predictions(torch.tensor([0, 1, 3]), scores[[0, 1, 3]], torch.tensor([0, 1, 1]), {2: "x"})
    two = Predictions(
        torch.tensor([0, 2, 3]), scores[[0, 2, 3]] + 1, torch.tensor([0, 2, 1]), {1: "y"}
    )
    ensemble = average_predictions([one, two])
    assert ensemble.indices.tolist() == [0, 3] and ensemble.excluded == {1: "y", 2: "x"}
    torch.testing.assert_close(ensemble.scores, scores[[0, 3]] + 0.5)
    assert prediction_metrics(ensemble, ["a", "b", "c", "d"])["excluded_videos"] == ["b", "c"]


def test_ensemble_averages_the_members_scores(tiny_dataset: Path, tmp_path: Path) -> None:
    four = save_checkpoint(
        tmp_path / "f4" / "last.pt", tiny_run_overrides(tiny_dataset, tmp_path / "f4"), seed=1
    )
    eight = save_checkpoint(
        tmp_path / "f8" / "last.pt",
        tiny_run_overrides(tiny_dataset, tmp_path / "f8", "data.num_segments=8"),
        seed=2,
    )
    members = [test_tool.main([f"ckpt={path}"]) for path in (four, eight)]
    ensemble = test_tool.main([f"ckpt=[{four},{eight}]"])

    out = tmp_path / "f4" / "eval_ensemble_f4-last+f8-last_1x1"
    scores = [torch.load(p.parent / "eval_last_1x1" / "scores.pt")["scores"] for p in (four, eight)]
    averaged = torch.load(out / "scores.pt")["scores"]
    torch.testing.assert_close(averaged, (scores[0] + scores[1]) / 2)
    written = json.loads((out / "metrics.json").read_text())
    assert written["checkpoints"] == [str(four), str(eight)]
    assert [m["num_segments"] for m in written["members"]] == [4, 8]
    for member, alone in zip(written["members"], members, strict=True):
        assert member["top1"] == pytest.approx(alone["top1"])
    assert ensemble["num_videos"] == NUM_VAL_VIDEOS

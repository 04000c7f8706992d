"""Tests of the synthetic Something-Something-V1-format dataset."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rnlvideo.data.synthetic import (
    ASYMMETRIC_SHAPES,
    SYNTHETIC_CLASSES,
    RenderSettings,
    class_names,
    dataset_is_complete,
    generate_synthetic_dataset,
    plan_video,
    render_video,
    target_states,
)

TINY = dict(videos_per_class_train=2, videos_per_class_val=1, min_frames=6, max_frames=9)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _generate(root: Path, **overrides) -> Path:
    generate_synthetic_dataset(root, **{**TINY, "num_workers": 1, **overrides})
    return root


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read_list(path: Path) -> list[tuple[str, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        video_id, num_frames, label = line.split(" ")
        rows.append((video_id, int(num_frames), int(label)))
    return rows


@pytest.fixture(scope="module")
def dataset(module_tmp_path: Path) -> Path:
    return _generate(module_tmp_path / "data")


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


def test_same_seed_is_byte_identical_whatever_the_workers(dataset: Path, tmp_path: Path):
    again = _generate(tmp_path / "again", num_workers=2)
    assert _all_files(again) == _all_files(dataset)


def test_different_seeds_differ(dataset: Path, tmp_path: Path):
    other = _all_files(_generate(tmp_path / "other", seed=1))
    same = _all_files(dataset)
    assert other[str(Path("frames") / "1" / "00001.jpg")] != same[str(Path("frames/1/00001.jpg"))]
    assert other["train.txt"] != same["train.txt"]


# ----------------------------------------------------------------------------------------------
# On-disk format
# ----------------------------------------------------------------------------------------------


def test_category_file_is_sorted_class_list(dataset: Path):
    categories = (dataset / "category.txt").read_text().splitlines()
    assert categories == sorted(categories) == class_names()
    assert len(set(categories)) == len(SYNTHETIC_CLASSES) == 12


def test_lists_match_frames_on_disk(dataset: Path):
    num_classes = len((dataset / "category.txt").read_text().splitlines())
    train = _read_list(dataset / "train.txt")
    val = _read_list(dataset / "val.txt")
    assert len(train) == 2 * num_classes and len(val) == num_classes
    ids = [video_id for video_id, _, _ in train + val]
    assert sorted(ids, key=int) == [str(i) for i in range(1, len(ids) + 1)]
    assert sorted(label for *_, label in val) == list(range(num_classes))
    for video_id, num_frames, label in train + val:
        assert 0 <= label < num_classes
        assert 6 <= num_frames <= 9
        names = sorted(path.name for path in (dataset / "frames" / video_id).iterdir())
        assert names == [f"{index:05d}.jpg" for index in range(1, num_frames + 1)]


def test_frames_are_100px_tall_with_v1_widths(dataset: Path):
    widths = set()
    for path in (dataset / "frames").rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.height == 100 and 120 <= image.width <= 176
            widths.add(image.width)
    assert len(widths) > 5


def test_frame_sizes_are_constant_within_a_video(dataset: Path):
    for video_dir in (dataset / "frames").iterdir():
        sizes = {Image.open(path).size for path in video_dir.iterdir()}
        assert len(sizes) == 1


def test_official_csvs_reproduce_tsm_lists(dataset: Path):
    """Re-run the logic of TSM's gen_label_sthv1.py on the CSVs: it must give our lists."""
    categories = sorted((dataset / "something-something-v1-labels.csv").read_text().splitlines())
    assert categories == (dataset / "category.txt").read_text().splitlines()
    label_of = {name: index for index, name in enumerate(categories)}
    for csv_name, list_name in (
        ("something-something-v1-train.csv", "train.txt"),
        ("something-something-v1-validation.csv", "val.txt"),
    ):
        expected = []
        for line in (dataset / csv_name).read_text().splitlines():
            assert re.fullmatch(r"\d+;[A-Za-z ]+", line)
            folder, name = line.split(";")
            num_frames = len(list((dataset / "frames" / folder).iterdir()))
            expected.append((folder, num_frames, label_of[name]))
        assert _read_list(dataset / list_name) == expected


def test_splits_are_disjoint(dataset: Path):
    train_ids = {video_id for video_id, _, _ in _read_list(dataset / "train.txt")}
    val_ids = {video_id for video_id, _, _ in _read_list(dataset / "val.txt")}
    assert not train_ids & val_ids


# ----------------------------------------------------------------------------------------------
# Completeness and regeneration
# ----------------------------------------------------------------------------------------------


def test_dataset_is_complete_detects_missing_pieces(dataset: Path, tmp_path: Path):
    assert dataset_is_complete(dataset)
    assert not dataset_is_complete(tmp_path / "absent")
    copy = _generate(tmp_path / "copy")
    next((copy / "frames" / "3").iterdir()).unlink()
    assert not dataset_is_complete(copy)
    copy = _generate(tmp_path / "copy", overwrite=True)
    assert dataset_is_complete(copy)
    (copy / "manifest.json").unlink()
    assert not dataset_is_complete(copy)


def test_dataset_of_another_generator_version_is_not_complete(tmp_path: Path):
    root = _generate(tmp_path / "old")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["rendering"] = "0" * 16
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert not dataset_is_complete(root)


def test_refuses_to_overwrite_without_permission(dataset: Path):
    with pytest.raises(FileExistsError):
        generate_synthetic_dataset(dataset, **TINY)


def test_cli_generates_once(tmp_path: Path):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic", REPO_ROOT / "tools" / "make_synthetic.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = tmp_path / "cli"
    args = ["--root", str(root), "--videos-per-class-train", "1", "--videos-per-class-val", "1"]
    args += ["--min-frames", "4", "--max-frames", "5", "--workers", "1"]
    tool.main(args)
    assert dataset_is_complete(root)
    written = (root / "manifest.json").stat().st_mtime_ns
    tool.main(args)
    assert (root / "manifest.json").stat().st_mtime_ns == written


# ----------------------------------------------------------------------------------------------
# Temporal pairing
# ----------------------------------------------------------------------------------------------


def test_every_class_has_a_reversed_partner():
    by_name = {cls.name: cls for cls in SYNTHETIC_CLASSES}
    for cls in SYNTHETIC_CLASSES:
        partner = by_name[cls.partner]
        assert partner.partner == cls.name
        assert partner.motion == cls.motion and partner.reverse != cls.reverse


@pytest.mark.parametrize("cls", [cls for cls in SYNTHETIC_CLASSES if not cls.reverse], ids=str)
def test_partner_is_the_same_video_played_backwards(cls):
    forward = plan_video(cls.name, seed=3, video_id=7)
    backward = plan_video(cls.partner, seed=3, video_id=7)
    np.testing.assert_array_equal(target_states(backward), target_states(forward)[:, ::-1])
    forward_frames, backward_frames = render_video(forward), render_video(backward)
    assert len(forward_frames) == len(backward_frames) >= 30
    for forward_frame, backward_frame in zip(forward_frames, backward_frames[::-1], strict=True):
        np.testing.assert_array_equal(forward_frame, backward_frame)


def _first_and_last(class_name: str, video_id: int) -> tuple[np.ndarray, np.ndarray]:
    states = target_states(plan_video(class_name, seed=0, video_id=video_id))
    return states[:, 0], states[:, -1]


@pytest.mark.parametrize("video_id", range(1, 6))
def test_motion_directions(video_id: int):
    first, last = _first_and_last("Pushing something from left to right", video_id)
    assert last[0, 0] - first[0, 0] > 30
    first, last = _first_and_last("Pushing something from right to left", video_id)
    assert first[0, 0] - last[0, 0] > 30
    first, last = _first_and_last("Moving something up", video_id)
    assert first[0, 1] - last[0, 1] > 30
    first, last = _first_and_last("Moving something down", video_id)
    assert last[0, 1] - first[0, 1] > 30
    first, last = _first_and_last("Moving something towards the camera", video_id)
    assert last[0, 2] > 2 * first[0, 2]
    first, last = _first_and_last("Moving something away from the camera", video_id)
    assert first[0, 2] > 2 * last[0, 2]
    first, last = _first_and_last("Rotating something clockwise", video_id)
    assert last[0, 3] - first[0, 3] > np.deg2rad(120)
    first, last = _first_and_last("Rotating something anticlockwise", video_id)
    assert first[0, 3] - last[0, 3] > np.deg2rad(120)
    first, last = _first_and_last("Making something appear", video_id)
    assert (first[0, 4], last[0, 4]) == (0.0, 1.0)
    first, last = _first_and_last("Making something disappear", video_id)
    assert (first[0, 4], last[0, 4]) == (1.0, 0.0)


@pytest.mark.parametrize("video_id", range(1, 6))
def test_relation_between_two_objects(video_id: int):
    def separation(states: np.ndarray) -> float:
        return float(np.hypot(*(states[0, :2] - states[1, :2])))

    first, last = _first_and_last("Moving something and something closer to each other", video_id)
    assert separation(first) > 2 * separation(last)
    first, last = _first_and_last("Moving something and something away from each other", video_id)
    assert separation(last) > 2 * separation(first)


def test_rendered_centroid_moves_left_to_right():
    settings = RenderSettings(num_distractors=0, noise_std=0.0)
    plan = plan_video("Pushing something from left to right", 0, 11, settings)
    fill = np.array(plan.targets[0].sprite.fill)
    centroids = []
    for frame in render_video(plan)[:: plan.num_frames // 4]:
        _, columns = np.nonzero(np.all(frame == fill, axis=-1))
        centroids.append(columns.mean())
    assert np.all(np.diff(centroids) > 0)


def test_rotating_targets_are_asymmetric():
    for video_id in range(1, 20):
        plan = plan_video("Rotating something clockwise", 0, video_id)
        polygon = plan.targets[0].sprite.polygon
        assert any(polygon is shape for shape in ASYMMETRIC_SHAPES.values())


def test_motion_stays_in_the_central_region():
    """Targets stay inside the central height x height square most of the time."""
    for cls in SYNTHETIC_CLASSES:
        for video_id in range(1, 6):
            plan = plan_video(cls.name, 0, video_id)
            centres = target_states(plan)[..., :2]
            offset = np.abs(centres - (plan.width / 2, plan.height / 2))
            assert offset.max() < 0.45 * plan.height

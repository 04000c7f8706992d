"""Deterministic synthetic dataset in the Something-Something V1 on-disk format.

Every class has a temporally reversed partner: a video of the partner class is drawn from
exactly the same distribution as a video of the class played backwards.  The frame *sets* of
paired classes are therefore statistically indistinguishable and only temporal order (and,
for one pair, the relation between two distant objects) separates them.  A model without
temporal modelling can at best identify the pair, i.e. reach about 50 % top-1.

Layout written under ``root`` (TSM conventions)::

    frames/<video_id>/00001.jpg ...         1-indexed %05d.jpg, ``height`` px tall
    category.txt                            sorted class names, line index = label
    train.txt, val.txt                      "<video_id> <num_frames> <label>" lines
    something-something-v1-labels.csv       class names (unsorted, like the official file)
    something-something-v1-train.csv        "<video_id>;<class name>" lines
    something-something-v1-validation.csv
    manifest.json                           written last: marks the dataset as complete

The same seed gives byte-identical files whatever the number of worker processes, because
each video is rendered from its own random stream seeded with ``(seed, video_id)``.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rnlvideo.data.lists import CATEGORY_FILENAME, write_lines

logger = logging.getLogger(__name__)

FRAMES_DIRNAME = "frames"
TRAIN_LIST_FILENAME = "train.txt"
VAL_LIST_FILENAME = "val.txt"
LABELS_CSV_FILENAME = "something-something-v1-labels.csv"
TRAIN_CSV_FILENAME = "something-something-v1-train.csv"
VAL_CSV_FILENAME = "something-something-v1-validation.csv"
MANIFEST_FILENAME = "manifest.json"
FRAME_TEMPLATE = "{:05d}.jpg"
MANIFEST_FORMAT = "rnlvideo-synthetic-sthv1"
MANIFEST_VERSION = 1

# The files written before the manifest.
_OUTPUT_FILENAMES = (
    CATEGORY_FILENAME,
    TRAIN_LIST_FILENAME,
    VAL_LIST_FILENAME,
    LABELS_CSV_FILENAME,
    TRAIN_CSV_FILENAME,
    VAL_CSV_FILENAME,
)

# Random streams derived from the dataset seed: one for the id/split shuffle, one per video.
_SPLIT_STREAM = 0
_VIDEO_STREAM = 1


@dataclass(frozen=True)
class SyntheticClass:
    """One action class: a motion family played forwards or backwards."""

    name: str
    motion: str
    reverse: bool
    partner: str


def _make_pair(motion: str, forward_name: str, backward_name: str) -> tuple[SyntheticClass, ...]:
    return (
        SyntheticClass(forward_name, motion, reverse=False, partner=backward_name),
        SyntheticClass(backward_name, motion, reverse=True, partner=forward_name),
    )


#: The classes in definition order (the order of the official-style labels CSV).
SYNTHETIC_CLASSES: tuple[SyntheticClass, ...] = (
    *_make_pair(
        "horizontal", "Pushing something from left to right", "Pushing something from right to left"
    ),
    *_make_pair("vertical", "Moving something up", "Moving something down"),
    *_make_pair(
        "depth", "Moving something towards the camera", "Moving something away from the camera"
    ),
    *_make_pair(
        "relation",
        "Moving something and something closer to each other",
        "Moving something and something away from each other",
    ),
    *_make_pair("rotation", "Rotating something clockwise", "Rotating something anticlockwise"),
    *_make_pair("visibility", "Making something appear", "Making something disappear"),
)

_CLASSES_BY_NAME = {cls.name: cls for cls in SYNTHETIC_CLASSES}


def class_names() -> list[str]:
    """Class names sorted as TSM's label generator sorts them: list index = class index."""
    return sorted(_CLASSES_BY_NAME)


@dataclass(frozen=True)
class RenderSettings:
    """Geometry and difficulty knobs shared by every video of a dataset."""

    height: int = 100
    min_width: int = 120
    max_width: int = 176
    min_frames: int = 30
    max_frames: int = 50
    num_distractors: int = 2
    noise_std: float = 4.0
    jpeg_quality: int = 90


@dataclass(frozen=True)
class Sprite:
    """The look of one object: a polygon of unit radius, a fill and an optional outline."""

    polygon: np.ndarray
    fill: tuple[int, int, int]
    outline: tuple[int, int, int] | None


@dataclass(frozen=True)
class Track:
    """An object and its per-frame states: columns ``x, y, radius, angle, alpha`` (T, 5)."""

    sprite: Sprite
    states: np.ndarray


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video; tracks are stored in forward (unreversed) order."""

    video_id: int
    class_name: str
    reverse: bool
    width: int
    height: int
    num_frames: int
    background: np.ndarray
    targets: tuple[Track, ...]
    distractors: tuple[Track, ...]
    noise_std: float
    noise_seed: int


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate_synthetic_dataset` wrote."""

    root: Path
    classes: list[str]
    num_train_videos: int
    num_val_videos: int
    num_frames: int
    seconds: float


# ----------------------------------------------------------------------------------------------
# Shapes and colours
# ----------------------------------------------------------------------------------------------


def _regular_polygon(num_vertices: int, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(num_points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    radii = np.tile([1.0, inner_radius], num_points)
    angles = np.pi * np.arange(2 * num_points) / num_points - np.pi / 2
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _pacman(mouth: float = np.pi / 3) -> np.ndarray:
    angles = np.linspace(mouth / 2, 2 * np.pi - mouth / 2, 20)
    rim = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.concatenate([[[-0.2, 0.0]], rim])


def _centred(points: Sequence[tuple[float, float]]) -> np.ndarray:
    polygon = np.asarray(points, dtype=np.float64)
    polygon -= polygon.mean(axis=0)
    return polygon / np.abs(polygon).max()


#: Shapes without rotational symmetry, so the direction of a rotation is visible.
ASYMMETRIC_SHAPES: dict[str, np.ndarray] = {
    "arrow": _centred(
        [
            (1, 0),
            (0.15, 0.65),
            (0.15, 0.25),
            (-0.9, 0.25),
            (-0.9, -0.25),
            (0.15, -0.25),
            (0.15, -0.65),
        ]
    ),
    "ell": _centred([(-0.7, -0.9), (-0.2, -0.9), (-0.2, 0.4), (0.8, 0.4), (0.8, 0.9), (-0.7, 0.9)]),
    "pacman": _pacman(),
    "flag": _centred(
        [(-0.8, -1), (-0.45, -1), (-0.45, -0.7), (0.9, -0.35), (-0.45, 0.1), (-0.45, 1), (-0.8, 1)]
    ),
}

#: Every shape a target or distractor may take.
ALL_SHAPES: dict[str, np.ndarray] = {
    "circle": _regular_polygon(20),
    "square": _regular_polygon(4, np.pi / 4),
    "triangle": _regular_polygon(3, -np.pi / 2),
    "pentagon": _regular_polygon(5, -np.pi / 2),
    "hexagon": _regular_polygon(6),
    "star": _star(),
    "cross": _centred(
        [
            (-1, -0.35),
            (-0.35, -0.35),
            (-0.35, -1),
            (0.35, -1),
            (0.35, -0.35),
            (1, -0.35),
            (1, 0.35),
            (0.35, 0.35),
            (0.35, 1),
            (-0.35, 1),
            (-0.35, 0.35),
            (-1, 0.35),
        ]
    ),
    **ASYMMETRIC_SHAPES,
}


def _hsv_colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(255 * red), round(255 * green), round(255 * blue)


def _target_sprite(rng: np.random.Generator, shapes: dict[str, np.ndarray]) -> Sprite:
    """A salient object: saturated bright fill with a dark outline."""
    polygon = shapes[rng.choice(sorted(shapes))]
    fill = _hsv_colour(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.0))
    outline_level = int(rng.integers(0, 40))
    return Sprite(polygon, fill, (outline_level,) * 3)


def _distractor_sprite(rng: np.random.Generator) -> Sprite:
    """A less salient object: muted fill, no outline."""
    polygon = ALL_SHAPES[rng.choice(sorted(ALL_SHAPES))]
    fill = _hsv_colour(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.9))
    return Sprite(polygon, fill, None)


# ----------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------


def _background_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two muted colours close to each other: the background never outshines the targets."""
    level = rng.uniform(70, 185)
    base = level + rng.uniform(-20, 20, size=3)
    contrast = rng.uniform(8, 20) * rng.choice([-1.0, 1.0])
    second = base + contrast + rng.uniform(-8, 8, size=3)
    return base, second


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:height, 0:width].astype(np.float32)


def _smooth_noise_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base, second = _background_colours(rng)
    cells = int(rng.integers(3, 8))
    weights = rng.random((cells, cells, 1))
    coarse = base + weights * (second - base)
    image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC)).astype(np.float32)


def _stripes_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base, second = _background_colours(rng)
    rows, cols = _pixel_grid(height, width)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(8, 24)
    phase = (cols * np.cos(angle) + rows * np.sin(angle)) / period
    mask = ((phase % 1.0) < 0.5)[..., None]
    return np.where(mask, base, second).astype(np.float32)


def _checker_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base, second = _background_colours(rng)
    rows, cols = _pixel_grid(height, width)
    cell = rng.uniform(8, 20)
    mask = (((rows // cell) + (cols // cell)) % 2 == 0)[..., None]
    return np.where(mask, base, second).astype(np.float32)


_BACKGROUNDS = (_smooth_noise_background, _stripes_background, _checker_background)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static textured background (H, W, 3) uint8: smooth noise, stripes or a checkerboard."""
    make = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    return np.clip(make(rng, height, width), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Motion families (forward direction)
# ----------------------------------------------------------------------------------------------


def _progress(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Fraction of the motion done at each frame: linear, starting/ending near the video ends.

    Start and end jitter are mirror images of each other, so the reversed progress has the
    same distribution as the forward one.
    """
    start = rng.uniform(0.0, 0.1)
    end = rng.uniform(0.9, 1.0)
    times = np.linspace(0.0, 1.0, num_frames)
    return np.clip((times - start) / (end - start), 0.0, 1.0)


def _states(
    progress: np.ndarray,
    start_xy: np.ndarray,
    end_xy: np.ndarray,
    radius: tuple[float, float],
    angle: tuple[float, float],
    alpha: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Linear interpolation of ``x, y, radius, angle, alpha`` along ``progress``."""
    start = np.array([*start_xy, radius[0], angle[0], alpha[0]])
    end = np.array([*end_xy, radius[1], angle[1], alpha[1]])
    return start + progress[:, None] * (end - start)


def _near_centre(rng: np.random.Generator, width: int, height: int, spread: float) -> np.ndarray:
    centre = np.array([width / 2, height / 2])
    return centre + rng.uniform(-spread, spread, size=2) * height


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _translation_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int, direction: float
) -> list[Track]:
    """One object crossing the central region along ``direction`` (radians, image axes)."""
    sprite = _target_sprite(rng, ALL_SHAPES)
    heading = _unit(direction + np.deg2rad(rng.uniform(-15, 15)))
    half_distance = rng.uniform(0.5, 0.7) * height / 2
    middle = _near_centre(rng, width, height, 0.06)
    radius = rng.uniform(0.15, 0.19) * height
    angle = rng.uniform(0, 2 * np.pi)
    states = _states(
        _progress(rng, num_frames),
        middle - half_distance * heading,
        middle + half_distance * heading,
        (radius, radius),
        (angle, angle),
    )
    return [Track(sprite, states)]


def _horizontal_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: left to right."""
    return _translation_tracks(rng, width, height, num_frames, direction=0.0)


def _vertical_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: upwards (image y decreases)."""
    return _translation_tracks(rng, width, height, num_frames, direction=-np.pi / 2)


def _depth_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: the object grows about threefold, as if approaching the camera."""
    sprite = _target_sprite(rng, ALL_SHAPES)
    start = _near_centre(rng, width, height, 0.08)
    end = start + rng.uniform(-0.05, 0.05, size=2) * height
    radii = (rng.uniform(0.08, 0.11) * height, rng.uniform(0.28, 0.34) * height)
    angle = rng.uniform(0, 2 * np.pi)
    states = _states(_progress(rng, num_frames), start, end, radii, (angle, angle))
    return [Track(sprite, states)]


def _relation_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: two distant objects approach each other along a mostly horizontal axis."""
    axis = _unit(np.deg2rad(rng.uniform(-50, 50)))
    middle = _near_centre(rng, width, height, 0.05)
    far = rng.uniform(0.66, 0.76) * height / 2
    near = rng.uniform(0.20, 0.26) * height / 2
    progress = _progress(rng, num_frames)
    tracks = []
    for side in (-1.0, 1.0):
        sprite = _target_sprite(rng, ALL_SHAPES)
        radius = rng.uniform(0.12, 0.15) * height
        angle = rng.uniform(0, 2 * np.pi)
        states = _states(
            progress,
            middle + side * far * axis,
            middle + side * near * axis,
            (radius, radius),
            (angle, angle),
        )
        tracks.append(Track(sprite, states))
    return tracks


def _rotation_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: an asymmetric object turns clockwise on screen by 150-240 degrees."""
    sprite = _target_sprite(rng, ASYMMETRIC_SHAPES)
    centre = _near_centre(rng, width, height, 0.06)
    radius = rng.uniform(0.2, 0.26) * height
    start_angle = rng.uniform(0, 2 * np.pi)
    turn = np.deg2rad(rng.uniform(150, 240))
    states = _states(
        _progress(rng, num_frames),
        centre,
        centre,
        (radius, radius),
        (start_angle, start_angle + turn),
    )
    return [Track(sprite, states)]


def _visibility_tracks(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> list[Track]:
    """Forward: a nearly still object fades in from invisible to opaque."""
    sprite = _target_sprite(rng, ALL_SHAPES)
    start = _near_centre(rng, width, height, 0.1)
    end = start + rng.uniform(-0.05, 0.05, size=2) * height
    radius = rng.uniform(0.16, 0.22) * height
    angle = rng.uniform(0, 2 * np.pi)
    states = _states(
        _progress(rng, num_frames), start, end, (radius, radius), (angle, angle), (0.0, 1.0)
    )
    return [Track(sprite, states)]


_MOTION_FAMILIES = {
    "horizontal": _horizontal_tracks,
    "vertical": _vertical_tracks,
    "depth": _depth_tracks,
    "relation": _relation_tracks,
    "rotation": _rotation_tracks,
    "visibility": _visibility_tracks,
}


def _distractor_track(rng: np.random.Generator, width: int, height: int, num_frames: int) -> Track:
    """A small muted object drifting in a random direction anywhere in the frame."""
    sprite = _distractor_sprite(rng)
    start = rng.uniform([0, 0], [width, height])
    end = start + rng.uniform(0, 0.5) * height * _unit(rng.uniform(0, 2 * np.pi))
    radius = rng.uniform(0.03, 0.05) * height
    angle = rng.uniform(0, 2 * np.pi)
    progress = np.linspace(0.0, 1.0, num_frames)
    return Track(sprite, _states(progress, start, end, (radius, radius), (angle, angle)))


# ----------------------------------------------------------------------------------------------
# Planning and rendering one video
# ----------------------------------------------------------------------------------------------


def video_rng(seed: int, video_id: int) -> np.random.Generator:
    """The random stream of one video: independent of every other video and of the workers."""
    return np.random.default_rng([seed, _VIDEO_STREAM, video_id])


def plan_video(
    class_name: str, seed: int, video_id: int, settings: RenderSettings = RenderSettings()
) -> VideoPlan:
    """Draw every random choice of one video.

    The draws do not depend on the direction of the class, so a class and its reversed
    partner planned with the same ``(seed, video_id)`` give the same scene, played in opposite
    directions.
    """
    synthetic_class = _CLASSES_BY_NAME[class_name]
    rng = video_rng(seed, video_id)
    height = settings.height
    width = int(rng.integers(settings.min_width, settings.max_width + 1))
    num_frames = int(rng.integers(settings.min_frames, settings.max_frames + 1))
    background = _background(rng, height, width)
    targets = _MOTION_FAMILIES[synthetic_class.motion](rng, width, height, num_frames)
    distractors = [
        _distractor_track(rng, width, height, num_frames) for _ in range(settings.num_distractors)
    ]
    return VideoPlan(
        video_id=video_id,
        class_name=class_name,
        reverse=synthetic_class.reverse,
        width=width,
        height=height,
        num_frames=num_frames,
        background=background,
        targets=tuple(targets),
        distractors=tuple(distractors),
        noise_std=settings.noise_std,
        noise_seed=int(rng.integers(2**63)),
    )


def target_states(plan: VideoPlan) -> np.ndarray:
    """Target states in playback order: (num_targets, T, 5) with columns x, y, r, angle, alpha."""
    states = np.stack([track.states for track in plan.targets])
    return states[:, ::-1] if plan.reverse else states


def _polygon_points(sprite: Sprite, state: np.ndarray) -> list[tuple[float, float]]:
    x, y, radius, angle, _ = state
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])
    points = radius * sprite.polygon @ rotation + (x, y)
    return [tuple(point) for point in points.tolist()]


def _draw_sprite(image: Image.Image, sprite: Sprite, state: np.ndarray) -> Image.Image:
    """Draw one object; a partly transparent one is blended onto a copy of the image."""
    alpha = float(state[4])
    if alpha <= 0.0:
        return image
    canvas = image.copy() if alpha < 1.0 else image
    outline_width = 2 if sprite.outline is not None else 0
    ImageDraw.Draw(canvas).polygon(
        _polygon_points(sprite, state),
        fill=sprite.fill,
        outline=sprite.outline,
        width=outline_width,
    )
    return Image.blend(image, canvas, alpha) if alpha < 1.0 else canvas


def _add_noise(frame: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    if noise_std <= 0:
        return frame
    noise = rng.standard_normal(frame.shape, dtype=np.float32) * noise_std
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def _render_forward_frame(plan: VideoPlan, index: int, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(plan.background)
    for track in (*plan.distractors, *plan.targets):
        image = _draw_sprite(image, track.sprite, track.states[index])
    return _add_noise(np.asarray(image), rng, plan.noise_std)


def render_video(plan: VideoPlan) -> list[np.ndarray]:
    """Render the frames (H, W, 3) uint8 in playback order (reversed classes play backwards)."""
    rng = np.random.default_rng(plan.noise_seed)
    frames = [_render_forward_frame(plan, index, rng) for index in range(plan.num_frames)]
    return frames[::-1] if plan.reverse else frames


def rendering_fingerprint() -> str:
    """A hash of a small reference rendering of every class.

    It changes whenever the generator draws different videos (new parameters, shapes, code),
    so a dataset written by an older generator is not mistaken for a current one.
    """
    settings = RenderSettings(min_frames=4, max_frames=4)
    digest = hashlib.sha256()
    for video_id, synthetic_class in enumerate(SYNTHETIC_CLASSES, start=1):
        for frame in render_video(plan_video(synthetic_class.name, 0, video_id, settings)):
            digest.update(frame.tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Writing the dataset
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VideoJob:
    """A picklable unit of work for one worker process."""

    frames_dir: str
    class_name: str
    seed: int
    video_id: int
    settings: RenderSettings


def _write_video(job: _VideoJob) -> tuple[int, int]:
    """Render one video and write its JPEG frames; returns ``(video_id, num_frames)``."""
    plan = plan_video(job.class_name, job.seed, job.video_id, job.settings)
    video_dir = Path(job.frames_dir) / str(job.video_id)
    video_dir.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(render_video(plan), start=1):
        Image.fromarray(frame).save(
            video_dir / FRAME_TEMPLATE.format(index), "JPEG", quality=job.settings.jpeg_quality
        )
    return job.video_id, plan.num_frames


@dataclass(frozen=True)
class _VideoEntry:
    video_id: int
    class_name: str
    split: str


def _assign_videos(
    videos_per_class_train: int, videos_per_class_val: int, seed: int
) -> list[_VideoEntry]:
    """Give every (class, split) slot a numeric id 1..N, shuffled so splits interleave."""
    slots = [
        (synthetic_class.name, split)
        for synthetic_class in SYNTHETIC_CLASSES
        for split, count in (("train", videos_per_class_train), ("val", videos_per_class_val))
        for _ in range(count)
    ]
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(slots))
    entries = [
        _VideoEntry(video_id, *slots[slot]) for video_id, slot in enumerate(order.tolist(), 1)
    ]
    return entries


def _run_jobs(jobs: list[_VideoJob], num_workers: int) -> dict[int, int]:
    """Execute the jobs, in worker processes when ``num_workers > 1``."""
    if num_workers <= 1:
        return dict(map(_write_video, jobs))
    with multiprocessing.get_context().Pool(num_workers) as pool:
        return dict(pool.imap_unordered(_write_video, jobs, chunksize=4))


def _write_split_files(
    root: Path, split: str, entries: list[_VideoEntry], frame_counts: dict[int, int]
) -> None:
    """Write the TSM list and the official-style CSV of one split, in the same order."""
    labels = {name: index for index, name in enumerate(class_names())}
    list_name, csv_name = {
        "train": (TRAIN_LIST_FILENAME, TRAIN_CSV_FILENAME),
        "val": (VAL_LIST_FILENAME, VAL_CSV_FILENAME),
    }[split]
    split_entries = [entry for entry in entries if entry.split == split]
    write_lines(
        root / list_name,
        (
            f"{entry.video_id} {frame_counts[entry.video_id]} {labels[entry.class_name]}"
            for entry in split_entries
        ),
    )
    write_lines(
        root / csv_name, (f"{entry.video_id};{entry.class_name}" for entry in split_entries)
    )


def _write_manifest(root: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (root / MANIFEST_FILENAME).write_text(text, encoding="utf-8")


def _remove_previous_output(root: Path) -> None:
    """Delete what an earlier generation wrote (the manifest first, so a crash stays visible)."""
    for name in (MANIFEST_FILENAME, *_OUTPUT_FILENAMES):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / FRAMES_DIRNAME, ignore_errors=True)


def _check_root_is_writable(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} is not empty; pass overwrite=True to regenerate it")


def generate_synthetic_dataset(
    root: str | Path,
    videos_per_class_train: int = 48,
    videos_per_class_val: int = 16,
    seed: int = 0,
    height: int = 100,
    min_frames: int = 30,
    max_frames: int = 50,
    num_workers: int = 2,
    min_width: int = 120,
    max_width: int = 176,
    num_distractors: int = 2,
    noise_std: float = 4.0,
    jpeg_quality: int = 90,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write the synthetic Something-Something-V1-format dataset under ``root``.

    Args:
        root: output folder; must be empty or absent unless ``overwrite``.
        videos_per_class_train: training videos per class.
        videos_per_class_val: validation videos per class.
        seed: dataset seed; the same seed gives byte-identical files.
        height: frame height in pixels (every frame of every video).
        min_frames: fewest frames of a video (inclusive).
        max_frames: most frames of a video (inclusive).
        num_workers: worker processes rendering videos (1: in this process).
        min_width: narrowest frame width (inclusive), drawn per video.
        max_width: widest frame width (inclusive), drawn per video.
        num_distractors: small muted objects drifting across every video.
        noise_std: standard deviation of the per-pixel Gaussian noise (0..255 scale).
        jpeg_quality: JPEG quality of the frames.
        overwrite: delete an earlier generation's files (only those this function writes).

    Returns:
        A :class:`SyntheticSummary` of what was written.
    """
    started = time.perf_counter()
    root = Path(root)
    _check_root_is_writable(root, overwrite)
    _remove_previous_output(root)
    settings = RenderSettings(
        height=height,
        min_width=min_width,
        max_width=max_width,
        min_frames=min_frames,
        max_frames=max_frames,
        num_distractors=num_distractors,
        noise_std=noise_std,
        jpeg_quality=jpeg_quality,
    )
    entries = _assign_videos(videos_per_class_train, videos_per_class_val, seed)
    frames_dir = root / FRAMES_DIRNAME
    frames_dir.mkdir(parents=True)
    logger.info("Rendering %d synthetic videos into %s", len(entries), frames_dir)
    jobs = [
        _VideoJob(str(frames_dir), entry.class_name, seed, entry.video_id, settings)
        for entry in entries
    ]
    frame_counts = _run_jobs(jobs, num_workers)

    write_lines(root / CATEGORY_FILENAME, class_names())
    write_lines(root / LABELS_CSV_FILENAME, (cls.name for cls in SYNTHETIC_CLASSES))
    for split in ("train", "val"):
        _write_split_files(root, split, entries, frame_counts)
    summary = SyntheticSummary(
        root=root,
        classes=class_names(),
        num_train_videos=sum(entry.split == "train" for entry in entries),
        num_val_videos=sum(entry.split == "val" for entry in entries),
        num_frames=sum(frame_counts.values()),
        seconds=time.perf_counter() - started,
    )
    _write_manifest(
        root,
        {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "rendering": rendering_fingerprint(),
            "seed": seed,
            "videos_per_class_train": videos_per_class_train,
            "videos_per_class_val": videos_per_class_val,
            "settings": asdict(settings),
            "classes": summary.classes,
            "num_train_videos": summary.num_train_videos,
            "num_val_videos": summary.num_val_videos,
            "num_frames": summary.num_frames,
        },
    )
    logger.info(
        "Synthetic dataset: %d classes, %d train + %d val videos, %d frames in %.1f s",
        len(summary.classes),
        summary.num_train_videos,
        summary.num_val_videos,
        summary.num_frames,
        summary.seconds,
    )
    return summary


# ----------------------------------------------------------------------------------------------
# Reading back
# ----------------------------------------------------------------------------------------------


def read_manifest(root: str | Path) -> dict | None:
    """The manifest written last by :func:`generate_synthetic_dataset`, or None if absent/bad."""
    path = Path(root) / MANIFEST_FILENAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    return manifest


def _count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for _ in entries)
    except OSError:
        return -1


def _list_problem(root: Path, list_name: str, num_classes: int) -> str | None:
    """Why a list file is unusable (bad line, bad label, missing frames), or None."""
    try:
        lines = (root / list_name).read_text(encoding="utf-8").splitlines()
    except OSError:
        return f"{list_name} is unreadable"
    if not lines:
        return f"{list_name} is empty"
    for line in lines:
        fields = line.split()
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
            return f"{list_name} has a malformed line {line!r}"
        if int(fields[2]) >= num_classes:
            return f"{list_name} has an unknown label in {line!r}"
        if _count_files(root / FRAMES_DIRNAME / fields[0]) != int(fields[1]):
            return f"frames/{fields[0]} does not hold {fields[1]} frames"
    return None


def _dataset_problem(root: Path) -> str | None:
    """Why ``root`` is not a complete dataset of the current generator, or None."""
    manifest = read_manifest(root)
    if manifest is None:
        return "no valid manifest (absent or interrupted generation)"
    if manifest.get("rendering") != rendering_fingerprint():
        return "written by a different version of the generator"
    missing = [name for name in _OUTPUT_FILENAMES if not (root / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    num_classes = len((root / CATEGORY_FILENAME).read_text(encoding="utf-8").splitlines())
    for list_name in (TRAIN_LIST_FILENAME, VAL_LIST_FILENAME):
        problem = _list_problem(root, list_name, num_classes)
        if problem:
            return problem
    return None


def dataset_is_complete(root: str | Path) -> bool:
    """True when ``root`` holds a dataset fully written by the current generator.

    Checks the manifest (written last, with the generator's :func:`rendering_fingerprint`),
    the category and list files, and that every listed folder holds exactly its frames.
    """
    problem = _dataset_problem(Path(root))
    if problem:
        logger.info("Synthetic dataset at %s is not complete: %s", root, problem)
    return problem is None

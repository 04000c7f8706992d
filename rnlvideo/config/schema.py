"""The structured config schema: Hydra dataclasses for every section with fixed keys.

``configs/config.yaml`` starts from :class:`RootConfig` (``rnlvideo_schema`` in Hydra's
ConfigStore) and each optimiser option from its own schema (``optim/sgd_schema``,
``optim/adamw_schema``), so an unknown key or a value of the wrong type fails at composition
with the key named. Value rules that types cannot express (ranges, choices) sit in each field's
metadata and are checked by :func:`rnlvideo.config.validation.validate_config`.

``model``, ``placement`` and the dataset nodes ``data.train`` / ``data.val`` are ``_target_``
nodes whose keys are their builder's keyword arguments: they are checked against the builder's
signature (:mod:`rnlvideo.config.targets`). The test protocols ``1x1``, ``2x3`` and ``10x3``
are presets of :class:`ProtocolConfig` stored in the ConfigStore group ``protocol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# The samplings and crop counts a test protocol may use (rnlvideo/data/sampling.py: the formulas
# and the automatic choice; rnlvideo/engine/protocols.py: the protocol built from them).
TEST_SAMPLINGS = ("tsn_test", "twice", "dense_test", "tsn_val")
TEST_CROPS = (1, 3)  # one centre crop, or TSM's three "full-res" crops


def setting(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with value rules: ``choices``, ``min`` (>=), ``above`` (>), ``max``."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rules": rules})
    return field(default=default, metadata={"rules": rules})


@dataclass
class TrainConfig:
    """``train.*``: the training loop (README "Training")."""

    epochs: int = setting(50, min=0)
    batch_size: int = setting(16, min=1)
    total_batch_size: int | None = setting(None, min=1)
    lr_total_batch_size: int | None = setting(None, min=1)
    num_workers: int = setting(4, min=0)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    amp: str | None = setting(None, choices=(None, "bf16", "fp16"))
    clip_grad_norm: float = setting(20.0, min=0)
    sync_bn: bool = False
    freeze_bn: bool = False
    channels_last: bool = False
    compile: bool = False
    resume: str = "auto"  # auto | never | force | overwrite | a checkpoint path
    finetune_from: str | None = None
    checkpoint_every_epochs: int = setting(1, min=0)
    keep_last_epochs: int = setting(3, min=0)
    checkpoint_every_steps: int = setting(0, min=0)
    eval_every_epochs: int = setting(1, min=0)
    log_every_steps: int = setting(20, min=1)
    nonfinite: str = setting("raise", choices=("raise", "skip"))
    deterministic: bool = False
    dist_timeout_s: float = setting(1800.0, above=0)
    loader_timeout_s: float = setting(600.0, min=0)


@dataclass
class EvalConfig:
    """``eval.*``: evaluation batches and score averaging."""

    batch_size: int = setting(16, min=1)
    num_workers: int = setting(4, min=0)
    softmax: bool = False
    max_clips_per_forward: int | None = setting(None, min=1)
    on_error: str = setting("raise", choices=("raise", "exclude"))


@dataclass
class ProtocolConfig:
    """``protocol.*``: test views, ``clips`` temporal clips x ``crops`` spatial crops."""

    clips: int = setting(1, min=1)
    crops: int = setting(1, choices=TEST_CROPS)
    sampling: str = setting("auto", choices=("auto", *TEST_SAMPLINGS))
    crop_size: int | None = setting(None, min=1)


PROTOCOL_PRESETS = {
    "1x1": ProtocolConfig(clips=1, crops=1),
    "2x3": ProtocolConfig(clips=2, crops=3),
    "10x3": ProtocolConfig(clips=10, crops=3),
}


# rnlvideo/data/decoders.py (VIDEO_BACKENDS) and rnlvideo/data/frames.py (FRAME_STORES)
VIDEO_BACKENDS = ("auto", "pyav", "torchcodec", "decord")
FRAME_STORES = ("folders", "packed")


@dataclass
class DataConfig:
    """``data.*``: one dataset's location and shapes; ``train`` / ``val`` are dataset nodes."""

    root: str = MISSING
    num_classes: int = setting(MISSING, min=1)
    num_segments: int = setting(8, min=1)
    input_size: int = setting(224, min=1)
    scale_size: int = setting(256, min=1)
    category_file: str | None = None
    on_error: str = setting("raise", choices=("raise", "resample"))
    min_frames: int = setting(3, min=1)
    device_transform: bool = False
    slowfast_alpha: int | None = setting(None, min=1)  # [slow, fast] clips for SlowFast models
    video_backend: str = setting("auto", choices=VIDEO_BACKENDS)  # decoder of video files
    frame_store: str = setting("folders", choices=FRAME_STORES)  # frame folders or packed files
    prepare_hint: str = ""
    train: Any = MISSING
    val: Any = MISSING


OPTIM_POLICIES = ("release", "tsm", "simple")  # rnlvideo/engine/param_groups.py


@dataclass
class SGDConfig:
    """``optim=sgd``: :func:`rnlvideo.engine.optim.create_sgd`."""

    _target_: str = "rnlvideo.engine.optim.create_sgd"
    lr: float = setting(0.02, above=0)
    momentum: float = setting(0.9, min=0)
    weight_decay: float = setting(1e-3, min=0)
    nesterov: bool = False
    policy: str = setting("release", choices=OPTIM_POLICIES)
    fc_weight_lr_mult: float = setting(5.0, min=0)
    fc_bias_lr_mult: float = setting(10.0, min=0)
    no_weight_decay_norm_bias: bool = False


@dataclass
class AdamWConfig:
    """``optim=adamw``: :func:`rnlvideo.engine.optim.create_adamw`."""

    _target_: str = "rnlvideo.engine.optim.create_adamw"
    lr: float = setting(1e-3, above=0)
    weight_decay: float = setting(0.05, min=0)
    betas: list[float] = setting([0.9, 0.999])
    policy: str = setting("simple", choices=OPTIM_POLICIES)
    fc_weight_lr_mult: float = setting(1.0, min=0)
    fc_bias_lr_mult: float = setting(1.0, min=0)
    no_weight_decay_norm_bias: bool = True


OPTIM_SCHEMAS: dict[str, type] = {
    SGDConfig._target_: SGDConfig,
    AdamWConfig._target_: AdamWConfig,
}


@dataclass
class ScheduleConfig:
    """``schedule.*``: :func:`rnlvideo.engine.optim.create_scheduler` (per iteration)."""

    _target_: str = "rnlvideo.engine.optim.create_scheduler"
    policy: str = setting("cosine", choices=("cosine", "step"))
    warmup_epochs: float = setting(1.0, min=0)
    warmup_start_factor: float = setting(0.1, above=0, max=1)
    min_lr_factor: float = setting(0.0, min=0, max=1)
    milestones: list[int] = setting([20, 40])
    gamma: float = setting(0.1, above=0)


@dataclass
class RootConfig:
    """The whole config of ``tools/train.py`` (and what a checkpoint stores)."""

    name: str = "default"
    output_dir: str = "outputs/${name}"
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    model: Any = MISSING
    placement: Any = field(default_factory=dict)
    data: DataConfig = MISSING
    optim: Any = MISSING
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Sections typed by a fixed dataclass (``optim`` is typed by its ``_target_``).
SECTIONS: dict[str, type] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "protocol": ProtocolConfig,
    "data": DataConfig,
    "schedule": ScheduleConfig,
}


def register_schemas() -> None:
    """Put the schemas and protocol presets in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore  # Hydra is needed to compose, not to build

    store = ConfigStore.instance()
    store.store(name="rnlvideo_schema", node=RootConfig)
    store.store(group="optim", name="sgd_schema", node=SGDConfig)
    store.store(group="optim", name="adamw_schema", node=AdamWConfig)
    for name, preset in PROTOCOL_PRESETS.items():
        store.store(group="protocol", name=name, node=preset)

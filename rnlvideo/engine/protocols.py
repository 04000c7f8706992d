"""Test protocols: which views of every video the model scores.

A test protocol is ``clips x crops`` views per video: ``clips`` temporal clips ("tsn_test" =
TSN segment centres; "twice" = centres then starts, both with TSM's test-mode formula for
every frame count; "dense_test" = evenly spaced 64-frame windows) times ``crops`` spatial crops
(1 centre crop, or TSM's 3 "full-res" crops). The settings (``protocol.*`` with the data's
sizes, from a preset or keys) are resolved once into a :class:`TestProtocol`, which builds the
test set, and which evaluation outputs record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch.utils.data import Dataset

from rnlvideo.config import ConfigError, check_dataset_on_disk, config_node, instantiate
from rnlvideo.config.schema import TEST_CROPS
from rnlvideo.data.sampling import resolve_sampling
from rnlvideo.data.transforms import Compose, three_crop_transform, val_transform


@dataclass(frozen=True)
class TestProtocol:
    """Resolved test views: ``clips`` clips by ``sampling`` x ``crops`` square crops of side
    ``crop_size`` after resizing the shorter side to ``scale_size``.

    ``name`` is ``"<clips>x<crops>"``, suffixed with the sampling when it is not the automatic
    choice and with the crop size when it was set explicitly (``2x3``, ``1x1_tsn_val``).
    """

    __test__ = False  # not a pytest test class

    name: str
    clips: int
    crops: int
    sampling: str
    scale_size: int
    crop_size: int

    @property
    def views(self) -> int:
        return self.clips * self.crops

    @classmethod
    def resolve(
        cls,
        clips: int,
        crops: int,
        input_size: int,
        scale_size: int,
        sampling: str = "auto",
        crop_size: int | None = None,
        val_sampling: str = "tsn_val",
    ) -> TestProtocol:
        """The protocol of these settings (``protocol.*`` and ``data.*``); ``val_sampling`` is
        the data's validation sampling, which the automatic choice follows."""
        if crops not in TEST_CROPS:
            raise ValueError(f"protocol.crops={crops!r}: expected one of {TEST_CROPS}")
        automatic = resolve_sampling("auto", clips, val_sampling)
        chosen = automatic if sampling == "auto" else resolve_sampling(sampling, clips)
        name = f"{clips}x{crops}"
        if chosen != automatic:
            name += f"_{chosen}"
        if crop_size is not None:
            name += f"_{crop_size}px"
        side = int(crop_size) if crop_size is not None else input_size if crops == 1 else scale_size
        return cls(name, clips, crops, chosen, scale_size, side)

    @classmethod
    def of(cls, cfg: DictConfig, single_view: bool = False) -> TestProtocol:
        """The protocol of ``cfg`` (``cfg.protocol`` with its data sizes); ``single_view``: one
        clip (segment centres) and one centre crop instead."""
        protocol, data = cfg.protocol, cfg.data
        return cls.resolve(
            clips=1 if single_view else protocol.clips,
            crops=1 if single_view else protocol.crops,
            input_size=data.input_size,
            scale_size=data.scale_size,
            sampling="auto" if single_view else protocol.sampling,
            crop_size=None if single_view else protocol.crop_size,
            val_sampling=data.val.sampling,
        )

    def record(self) -> dict[str, int | str]:
        """The protocol as evaluation outputs record it (``metrics.json``: ``protocol``)."""
        return {
            "name": self.name,
            "clips": self.clips,
            "crops": self.crops,
            "views": self.views,
            "sampling": self.sampling,
            "scale_size": self.scale_size,
            "crop_size": self.crop_size,
        }

    def transform(self) -> Compose:
        """Shorter side to ``scale_size``, then 1 centre crop or 3 full-res crops, normalised.

        ``(T, C, H, W)`` uint8 -> ``(T, C, S, S)`` (1 crop) or ``(3, T, C, S, S)`` (3 crops)
        float32, ``S = crop_size``.
        """
        if self.crops == 1:
            return val_transform(input_size=self.crop_size, scale_size=self.scale_size)
        return three_crop_transform(input_size=self.crop_size, scale_size=self.scale_size)

    def dataset(self, base: Mapping[str, Any], trust_code: bool = False) -> Dataset:
        """The test split: the plain dataset node ``base`` (``data.val``) built with this
        protocol's sampling, clip count and transform instead of its own.

        Every dataset class (frame folders, video files) and option (``on_error``, ...) of the
        data config works. A test set never substitutes a video (``on_error='resample'`` is
        refused). ``dataset[i]`` is ``(C, T, S, S)`` for one view, else ``(views, C, T, S, S)``.
        """
        if base.get("on_error") == "resample":
            raise ConfigError("data.val.on_error='resample': a test set never substitutes a video")
        return instantiate(
            base,
            "data.val",
            trust_code,
            sampling=self.sampling,
            num_clips=self.clips,
            transform=self.transform(),
        )


def build_test_dataset(
    cfg: DictConfig, protocol: TestProtocol | None = None, trust_code: bool = False
) -> Dataset:
    """The test split of ``cfg``: ``data.val``'s videos under ``protocol`` (by default the
    protocol of ``cfg``)."""
    check_dataset_on_disk(cfg, "val")
    protocol = protocol or TestProtocol.of(cfg)
    return protocol.dataset(config_node(cfg, "data.val"), trust_code)

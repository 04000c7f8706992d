"""Video data: list files, frame sampling, transforms, the frame-folder and video-file datasets
and the device-side augmentation mode."""

from rnlvideo.data.device_transforms import (
    DeferredClip,
    DeviceTransform,
    defer_transform,
    to_model_input,
)
from rnlvideo.data.frames import (
    ClipDataset,
    FrameFolderDataset,
    SharedCounter,
    VideoDataError,
    load_frame,
)
from rnlvideo.data.lists import (
    VideoRecord,
    read_categories,
    read_video_list,
)
from rnlvideo.data.sampling import (
    SAMPLING_MODES,
    clips_per_sample,
    dense_offsets,
    sample_offsets,
    tsn_test_offsets,
    tsn_train_offsets,
    tsn_val_offsets,
    twice_sample_offsets,
)
from rnlvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    MultiScaleCrop,
    Normalize,
    ResizeShorter,
    ThreeCrop,
    VideoTransform,
    crop_sizes,
    fixed_crop_offsets,
    three_crop_transform,
    train_transform,
    val_transform,
)
from rnlvideo.data.video import VideoFileDataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLING_MODES",
    "CenterCrop",
    "ClipDataset",
    "Compose",
    "DeferredClip",
    "DeviceTransform",
    "FrameFolderDataset",
    "MultiScaleCrop",
    "Normalize",
    "ResizeShorter",
    "SharedCounter",
    "ThreeCrop",
    "VideoDataError",
    "VideoFileDataset",
    "VideoRecord",
    "VideoTransform",
    "clips_per_sample",
    "crop_sizes",
    "defer_transform",
    "dense_offsets",
    "fixed_crop_offsets",
    "load_frame",
    "read_categories",
    "read_video_list",
    "sample_offsets",
    "three_crop_transform",
    "to_model_input",
    "train_transform",
    "tsn_test_offsets",
    "tsn_train_offsets",
    "tsn_val_offsets",
    "twice_sample_offsets",
    "val_transform",
]

"""Video models: TSM ResNets with temporal shift and (region-based) non-local blocks."""

from rnlvideo.models.nonlocal_blocks import ChannelGate, NLBlock, RNLBlock
from rnlvideo.models.temporal_shift import TemporalShift, temporal_shift
from rnlvideo.models.tsm_resnet import TSMResNet, create_tsm_resnet

__all__ = [
    "ChannelGate",
    "NLBlock",
    "RNLBlock",
    "TSMResNet",
    "TemporalShift",
    "create_tsm_resnet",
    "temporal_shift",
]

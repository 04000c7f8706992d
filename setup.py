import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(
    r'__version__ = "([^"]+)"', (Path(__file__).parent / "rnlvideo" / "version.py").read_text()
).group(1)

DECORD = 'decord>=0.6; platform_machine == "x86_64"'
DEPLOY = ["onnxruntime>=1.31,<2", "onnx>=1.23,<2", "onnxscript>=0.7,<1"]

# Ranges known to work; constraints.txt pins the exact versions the project is tested with.
setup(
    name="rnlvideo",
    version=VERSION,
    description="Region-based Non-local (RNL) video classification: TSM ResNets, "
    "Something-Something data pipelines and a distributed trainer.",
    packages=find_packages(include=["rnlvideo", "rnlvideo.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19,<1",
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3,<2.4",
        "PyYAML>=6",
        "numpy>=1.24",
        "pillow>=10",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        # 3D-CNN baselines (rnlvideo.models.pytorchvideo_adapter): pytorchvideo's model builders,
        # which import fvcore and iopath (pytorchvideo.transforms is not used)
        "pytorchvideo>=0.1.5,<0.2",
        "fvcore>=0.1.5",
        "iopath>=0.1.7,<0.2",
    ],
    extras_require={
        # Video decoders (rnlvideo.data.decoders): PyAV everywhere (it bundles FFmpeg); decord
        # only where it has wheels (x86_64). torchcodec needs the system's FFmpeg libraries.
        "video": ["av>=14", DECORD],
        "torchcodec": ["torchcodec>=0.17"],
        # Exporting (tools/export.py: onnx, onnxscript) and running ONNX files (onnxruntime)
        "deploy": DEPLOY,
        "dev": ["pytest>=8", "ruff>=0.6", "av>=14", DECORD, "torchcodec>=0.17", *DEPLOY],
    },
)

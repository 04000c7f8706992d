from setuptools import find_packages, setup

setup(
    name="rnlvideo",
    version="0.1.0",
    description="Region-based Non-local (RNL) video classification: TSM ResNets, "
    "Something-Something data pipelines and a distributed trainer.",
    packages=find_packages(include=["rnlvideo", "rnlvideo.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "hydra-core>=1.3",
        "numpy",
        "pillow",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "video": ["decord>=0.6"],
        "dev": ["pytest", "ruff", "av", "decord>=0.6"],
    },
)

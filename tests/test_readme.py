"""The README cannot drift from the configs: every documented override composes.

Every command of the README's code blocks that runs a tool reading configs (``tools/train.py``,
``torchrun ... tools/train.py``, the launch scripts, ``tools/flops.py``,
``tools/check_dataset.py``, ``tools/convert_official.py``) is composed with its overrides;
the ``key=value`` arguments of the tools that evaluate or export a checkpoint
(``tools/test.py``, ``tools/predict.py``, ``tools/visualize_attention.py``,
``tools/export.py``) are applied to a stored config.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rnlvideo.config import apply_overrides, compose_config

README = Path(__file__).resolve().parents[1] / "README.md"
COMPOSING = (
    "tools/train.py",
    "scripts/dist_train.sh",
    "scripts/slurm_train.sh",
    "scripts/demo.sh",
    "tools/flops.py",
    "tools/check_dataset.py",
    "tools/convert_official.py",
)
CHECKPOINT_TOOLS = {
    "tools/test.py": ("ckpt", "out"),
    "tools/predict.py": ("ckpt", "model", "input", "topk"),
    "tools/export.py": ("ckpt", "out", "format", "tolerance", "locate"),
    "tools/visualize_attention.py": ("ckpt", "video", "block", "queries", "out"),
}
# Shell variables of the examples, given a value.
PLACEHOLDERS = {"$STHV1_ROOT": "/data/sthv1", "$STHV2_ROOT": "/data/sthv2"}


def readme_commands() -> list[list[str]]:
    """The shell commands of the README's ``bash`` blocks, split into words."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for name, value in PLACEHOLDERS.items():
                line = line.replace(name, value)
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def tool_arguments(words: list[str], tools: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """``(tool, its key=value arguments)`` when the command runs one of ``tools``."""
    for index, word in enumerate(words):
        if word in tools:
            return word, [w for w in words[index + 1 :] if "=" in w and not w.startswith("-")]
    return None


COMMANDS = readme_commands()
COMPOSED = [found for words in COMMANDS if (found := tool_arguments(words, COMPOSING))]
ON_CHECKPOINTS = [
    found for words in COMMANDS if (found := tool_arguments(words, tuple(CHECKPOINT_TOOLS)))
]


def test_the_readme_documents_commands() -> None:
    assert len(COMPOSED) >= 15 and len(ON_CHECKPOINTS) >= 5


def command_id(value: str | list[str]) -> str:
    return " ".join(value) if isinstance(value, list) else value


@pytest.mark.parametrize(("tool", "overrides"), COMPOSED, ids=command_id)
def test_readme_training_overrides_compose(tool: str, overrides: list[str]) -> None:
    compose_config(overrides)


@pytest.fixture(scope="module")
def stored_demo_config():
    return compose_config(["+experiment=demo"])


@pytest.mark.parametrize(("tool", "arguments"), ON_CHECKPOINTS, ids=command_id)
def test_readme_evaluation_overrides_apply_to_a_stored_config(
    stored_demo_config, tool: str, arguments: list[str]
) -> None:
    own = CHECKPOINT_TOOLS[tool]
    overrides = [a for a in arguments if a.split("=", 1)[0] not in own]
    apply_overrides(stored_demo_config, overrides)

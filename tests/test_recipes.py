"""Every experiment composes to its row of the recipe table in docs/method.md.

A new experiment needs a row; a change of defaults or of merge order that alters a recipe fails
here instead of silently changing what a run trains.
"""

from pathlib import Path

import pytest

from rnlvideo.config import compose_config

REPO = Path(__file__).resolve().parents[1]
NOT_RECIPES = {"demo", "ablation_synthetic"}  # synthetic-data runs, documented in the README
HEADER = "| experiment | segments | sampling | lr | total batch | wd | dropout | epochs | warmup |"
EXPERIMENTS = sorted(
    path.stem
    for path in (REPO / "configs" / "experiment").glob("*.yaml")
    if path.stem not in NOT_RECIPES
)


def recipe_table() -> dict[str, dict[str, str]]:
    """``{experiment: {column: cell}}`` from the recipe table of docs/method.md."""
    lines = (REPO / "docs" / "method.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    columns = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["experiment"].strip("`")] = cells
    return rows


def test_every_experiment_has_exactly_one_recipe_row():
    assert sorted(recipe_table()) == EXPERIMENTS


def composed_recipe(experiment: str) -> dict[str, object]:
    cfg = compose_config([f"+experiment={experiment}"])
    schedule = cfg.schedule
    if schedule.policy == "step":
        steps = ", ".join(str(m) for m in schedule.milestones)
        schedule_text = f"step {steps}"
    else:
        schedule_text = schedule.policy
    return {
        "segments": cfg.data.num_segments,
        "sampling": cfg.data.train.sampling,
        "lr": cfg.optim.lr,
        "total batch": cfg.train.total_batch_size,
        "lr total batch": cfg.train.lr_total_batch_size,
        "wd": cfg.optim.weight_decay,
        "dropout": cfg.model.dropout,
        "epochs": cfg.train.epochs,
        "warmup": schedule.warmup_epochs,
        "schedule": schedule_text,
        "clip": cfg.train.clip_grad_norm,
        "policy": cfg.optim.policy,
    }


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_to_its_recipe(experiment):
    row = recipe_table()[experiment]
    actual = composed_recipe(experiment)
    expected = {
        "segments": int(row["segments"]),
        "sampling": row["sampling"].strip("`"),
        "lr": pytest.approx(float(row["lr"])),
        "total batch": int(row["total batch"]),
        # The recipe's lr is for the recipe's total: no scaling unless the user changes it.
        "lr total batch": int(row["total batch"]),
        "wd": pytest.approx(float(row["wd"])),
        "dropout": pytest.approx(float(row["dropout"])),
        "epochs": int(row["epochs"]),
        "warmup": pytest.approx(float(row["warmup"])),
        "schedule": row["schedule"],
        "clip": pytest.approx(float(row["clip"])),
        "policy": row["policy"],
    }
    assert actual == expected

"""Total-batch arithmetic: accumulation for any process count, its refusals, the learning rate."""

import pytest

from rnlvideo.engine.batching import (
    accumulation_steps,
    plan_batches,
    scaled_lr,
    valid_per_process_sizes,
)


@pytest.mark.parametrize(
    ("per_process", "processes", "accumulation"),
    [(16, 1, 4), (4, 4, 4), (16, 4, 1), (2, 8, 4), (8, 8, 1), (1, 16, 4), (4, 16, 1)],
)
def test_the_recipe_total_on_any_number_of_processes(per_process, processes, accumulation):
    plan = plan_batches(per_process, processes, 64, 0.02, 64)
    assert plan.accumulation == accumulation
    assert plan.total == 64 and plan.lr == 0.02
    assert plan.describe().startswith(
        f"batch {per_process} per process x {processes} processes x {accumulation} "
        f"accumulation = 64 clips per optimiser step; lr 0.02 (optim.lr, the recipe's lr"
    )


def test_no_total_means_no_accumulation():
    plan = plan_batches(16, 4, None, 2e-3, None)
    assert (plan.accumulation, plan.total, plan.lr) == (1, 64, 2e-3)
    assert plan.describe().endswith("lr 0.002 (optim.lr, not scaled)")
    assert accumulation_steps(None, 3, 5) == 1


def test_lr_scales_linearly_only_when_the_total_changes():
    plan = plan_batches(16, 8, 128, 0.02, 64)
    assert (plan.accumulation, plan.lr) == (1, pytest.approx(0.04))
    assert "optim.lr=0.02 at total 64, scaled linearly to total 128" in plan.describe()
    # Without a total, the lr still follows the batch the processes make together.
    assert plan_batches(16, 8, None, 0.02, 64).lr == pytest.approx(0.04)
    assert scaled_lr(0.01, 32, 64) == pytest.approx(0.005)
    assert scaled_lr(0.01, 32, None) == 0.01
    with pytest.raises(ValueError, match="train.lr_total_batch_size=0"):
        scaled_lr(0.01, 32, 0)


def test_a_total_that_does_not_divide_lists_the_sizes_that_work():
    assert valid_per_process_sizes(64, 8) == [1, 2, 4, 8]
    assert valid_per_process_sizes(64, 3) == []
    with pytest.raises(ValueError) as error:
        plan_batches(16, 8, 64, 0.02, 64)  # 16 x 8 = 128 clips per pass: more than the total
    message = str(error.value)
    assert "train.total_batch_size=64" in message and "train.batch_size=16" in message
    assert "train.batch_size in [1, 2, 4, 8]" in message
    with pytest.raises(ValueError, match=r"train.batch_size in \[1, 2, 3, 6\]"):
        accumulation_steps(12, 4, 2)
    with pytest.raises(ValueError, match="a total that is a multiple of 3"):
        accumulation_steps(64, 4, 3)
    with pytest.raises(ValueError, match="train.total_batch_size=0"):
        plan_batches(4, 1, 0, 0.02, 64)
    with pytest.raises(ValueError, match="train.batch_size=0"):
        accumulation_steps(64, 0, 1)

"""``global_batch_size``: the per-device batch over ranks and accumulation steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from paras2s_pl.data.batching import per_device_batch
from paras2s_pl.errors import UsageError


def trainer(world: int, accumulate: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world, accumulate_grad_batches=accumulate)


def test_global_batch_divides_by_ranks_and_accumulation_steps():
    assert per_device_batch(64, 1, trainer(8, 2)) == 4  # the paper's SFT: 4 x 8 x 2
    assert per_device_batch(32, 1, trainer(8, 4), accumulate=False) == 4  # GRPO's B = 32
    assert per_device_batch(None, 6, trainer(8, 2)) == 6  # unset: batch_size as given
    assert per_device_batch(12, 1, None) == 12  # no trainer: one process


@pytest.mark.parametrize(
    ("global_batch", "world", "accumulate", "fix"),
    [(64, 3, 1, "multiple of 3"), (64, 8, 3, "multiple of 24"), (0, 1, 1, "multiple of 1")],
)
def test_a_global_batch_that_does_not_split_names_the_fix(global_batch, world, accumulate, fix):
    with pytest.raises(UsageError, match=fix) as err:
        per_device_batch(global_batch, 1, trainer(world, accumulate))
    assert f"global_batch_size={global_batch}" in str(err.value)
    assert "\n" not in str(err.value)


def test_batch_size_below_one_is_refused():
    with pytest.raises(UsageError, match="batch_size=0"):
        per_device_batch(None, 0, trainer(1, 1))

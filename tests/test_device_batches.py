"""The device data path (data.device_batches) makes exactly the batches of TrainBatches: every tensor equal,
for several steps, seeds, ranks, training distributions, look-alike pairs, fine-tuning and static padding."""

import dataclasses

import pytest
import torch

from biolab.data.device_batches import DeviceBatches
from biolab.data.distributions import PowerLaw, Sequential, WarmUp
from biolab.errors import ConfigError

from conftest import small_dm

LOOKALIKES = {"levels": [1, 4], "pairs_per_level": 2, "control_levels": [4], "control_pairs_per_level": 1}
SETTINGS = {
    "uniform": {},
    "power_law": {"distribution": PowerLaw(alpha=0.8)},
    "lookalikes": {"lookalikes": LOOKALIKES},
    "warmup": {"distribution": WarmUp(k=16, epochs=1, batch_size=8)},
    "sequential": {"distribution": Sequential(groups=4, total_steps=40)},
    "fixed_order_three_attributes": {"shuffle_sentences": False, "attributes": ["major", "birth_date", "employer"]},
    "finetuning": {"n_new_people": 16, "replay_weight": 0.5},
    "pad_to_max": {"pad_to": "max"},
    "pad_to_buckets": {"pad_to": [60, 70, "max"]},
}


def assert_same_batch(expected: dict, got: dict, where: str) -> None:
    assert expected.keys() == got.keys(), where
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape, (where, key)
        assert torch.equal(got[key], expected[key]), (where, key)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_device_batches_equal_the_current_ones(setting):
    dm = small_dm(**SETTINGS[setting])
    for seed in (2, 11):
        for rank in (0, 1):
            batches = dataclasses.replace(dm.train_batches, seed=seed, rank=rank)
            device_batches = DeviceBatches(batches, "cpu")
            for step in (0, 1, 17, 39, 1000):
                assert_same_batch(batches(step), device_batches(step), f"{setting} seed {seed} rank {rank} step {step}")


def test_batches_differ_between_steps_so_the_comparison_can_fail():
    dm = small_dm()
    device_batches = DeviceBatches(dm.train_batches, "cpu")
    assert not torch.equal(device_batches(0)["input_ids"][:, :20], device_batches(1)["input_ids"][:, :20])


def test_datamodule_stream_uses_the_device_path_with_the_same_batches():
    dm = small_dm(device_batches=True, pad_to="max")
    loader = dm.train_dataloader()  # no trainer: the device is the CPU
    assert isinstance(loader.dataset.make_batch, DeviceBatches)
    for step, batch in zip(range(3), loader):
        assert_same_batch(dm.train_batch(step), batch, f"step {step}")


def test_device_batches_need_the_training_process():
    with pytest.raises(ConfigError, match="data.num_workers=0"):
        small_dm(device_batches=True, num_workers=2)
    with pytest.raises(ConfigError, match="data.device_batches"):
        small_dm(device_batches="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_equal_the_current_ones():
    dm = small_dm(pad_to=[70, "max"])
    device_batches = DeviceBatches(dm.train_batches, "cuda")
    for step in range(5):
        batch = device_batches(step)
        assert all(t.is_cuda for t in batch.values())
        assert_same_batch(dm.train_batch(step), {k: v.cpu() for k, v in batch.items()}, f"step {step}")

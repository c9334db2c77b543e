"""Schedules, samplers, SpecAugment and checkpoint averaging."""

from __future__ import annotations

import pytest
import torch

from echostream.frontend.specaugment import SpecAugmentConfig, spec_augment
from echostream.training.averaging import average_state_dicts, select_checkpoints
from echostream.training.sampler import DurationBucketSampler, SamplerConfig
from echostream.training.schedule import ScheduleConfig, lr_at, make_scheduler


def test_warmup_then_noam_and_cosine() -> None:
    noam = ScheduleConfig(lr=5e-5, warmup_steps=2000, decay="noam")
    assert lr_at(noam, 999) == pytest.approx(2.5e-5)
    assert lr_at(noam, 1999) == pytest.approx(5e-5)
    assert lr_at(noam, 7999) == pytest.approx(2.5e-5)
    cos = ScheduleConfig(lr=1.0, warmup_steps=10, decay="cosine", total_steps=110, min_lr=0.1)
    assert lr_at(cos, 9) == pytest.approx(1.0)
    assert lr_at(cos, 59) == pytest.approx(0.55)
    assert lr_at(cos, 500) == pytest.approx(0.1)


def test_scheduler_resumes_exactly() -> None:
    cfg = ScheduleConfig(lr=1e-3, warmup_steps=5)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_scheduler(opt, cfg)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = make_scheduler(opt2, cfg)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(cfg, 7))


@pytest.mark.parametrize("bad", [{"lr": 0}, {"decay": "step"}, {"decay": "cosine", "total_steps": 1}])
def test_schedule_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(**bad)


def test_sampler_limits_and_resume() -> None:
    durations = [1.0 + (i * 37 % 100) / 10 for i in range(300)]
    cfg = SamplerConfig(max_batch_seconds=40.0, max_batch_size=8, seed=3)
    sampler = DurationBucketSampler(durations, cfg)
    epoch = list(sampler)
    assert sorted(i for b in epoch for i in b) == list(range(300))
    for batch in epoch:
        assert len(batch) <= 8
        assert max(durations[i] for i in batch) * len(batch) <= 40.0 or len(batch) == 1
    resumed = DurationBucketSampler(durations, cfg)
    it = iter(resumed)
    first = [next(it) for _ in range(5)]
    state = resumed.state_dict()
    again = DurationBucketSampler(durations, cfg)
    again.load_state_dict(state)
    assert first + list(again) == list(DurationBucketSampler(durations, cfg))
    assert list(sampler) != epoch  # the next epoch is shuffled differently


def test_sampler_ranks_split_batches() -> None:
    durations = [2.5] * 40
    cfg = SamplerConfig(max_batch_seconds=10.0, seed=1)
    ranks = [list(DurationBucketSampler(durations, cfg, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen))


def test_sampler_mixes_sources_by_weight() -> None:
    durations = [1.0 + (i % 7) for i in range(1000)]
    sources = [0] * 900 + [1] * 100  # a large source and a small one, mixed 20 / 80
    cfg = SamplerConfig(max_batch_seconds=60.0, seed=2)
    sampler = DurationBucketSampler(durations, cfg, sources=sources, weights=[0.2, 0.8])
    first = [i for b in sampler for i in b]
    second = [i for b in sampler for i in b]
    for epoch in (first, second):
        assert len(epoch) == 1000  # as many utterances as both sources hold
        from_small = [i for i in epoch if sources[i] == 1]
        assert len(from_small) == 800  # the small source repeated 8 times
        assert all(from_small.count(i) == 8 for i in range(900, 1000))
        from_large = [i for i in epoch if sources[i] == 0]
        assert len(from_large) == len(set(from_large)) == 200  # a subsample, no repeats
    assert set(first) != set(second)  # each epoch draws another subsample of the large source
    resumed = DurationBucketSampler(durations, cfg, sources=sources, weights=[0.2, 0.8])
    resumed.load_state_dict({"epoch": 1, "position": 0})
    assert [i for b in resumed for i in b] == second


@pytest.mark.parametrize(
    ("sources", "weights", "message"),
    [
        ([0, 0, 1], [1.0, -1.0], ">= 0"),
        ([0, 0, 0], [1.0, 1.0], "source 1 has weight 1.0 but no utterances"),
        ([0, 2, 0], [1.0, 1.0], "outside the 2 weights"),
        ([0, 0], [1.0], "2 sources for 3 utterances"),
    ],
)
def test_sampler_refuses_a_bad_mix(sources: list[int], weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DurationBucketSampler([1.0, 2.0, 3.0], SamplerConfig(), sources=sources, weights=weights)


def test_spec_augment_masks_bands_and_spans() -> None:
    x = torch.ones(500, 80)
    cfg = SpecAugmentConfig(freq_masks=2, max_freq=27, time_masks=2, max_time=100)
    g = torch.Generator().manual_seed(0)
    y = spec_augment(x, cfg, g)
    assert y.shape == x.shape and (y == 0).any()
    dead_bins = (y == 0).all(dim=0).sum().item()
    dead_frames = (y == 0).all(dim=1).sum().item()
    assert dead_bins <= 2 * 27 and dead_frames <= 2 * 100
    assert torch.equal(spec_augment(x, cfg, torch.Generator().manual_seed(0)), y)
    assert torch.equal(spec_augment(x, SpecAugmentConfig(freq_masks=0, time_masks=0)), x)


def test_average_is_elementwise_mean() -> None:
    states = [{"w": torch.randn(3, 4), "n": torch.tensor(i)} for i in range(4)]
    avg = average_state_dicts(states)
    assert torch.allclose(avg["w"], torch.stack([s["w"] for s in states]).mean(0))
    assert avg["n"].item() == 3
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    assert select_checkpoints([("a", 5.0), ("b", 9.0), ("c", 1.0)], 2, lower_is_better=False) == ["a", "b"]

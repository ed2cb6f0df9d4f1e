import math

import pytest
import torch

from trainlab.config import ScheduleConfig
from trainlab.engine.schedules import LRSchedule


def schedule(**kwargs) -> LRSchedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return LRSchedule(optimizer, ScheduleConfig(**kwargs), peak_lr=0.1)


def test_constant():
    s = schedule(name="constant")
    assert s.update(0.0, 0.0) == pytest.approx(0.1)
    assert s.update(0.9, 9.0) == pytest.approx(0.1)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_step_decays_every_step_size_epochs():
    s = schedule(name="step", step_size=3, gamma=0.5)
    assert [s.multiplier(0, e) for e in (0, 2.9, 3, 6.5)] == pytest.approx([1, 1, 0.5, 0.25])


def test_exponential_is_per_epoch():
    s = schedule(name="exponential", gamma=0.9)
    assert s.multiplier(0, 2.0) == pytest.approx(0.81)
    assert s.multiplier(0, 0.5) == pytest.approx(0.9**0.5)


def test_cosine_goes_from_peak_to_min_ratio():
    s = schedule(name="cosine", min_lr_ratio=0.1)
    assert s.multiplier(0.0, 0) == pytest.approx(1.0)
    assert s.multiplier(0.5, 0) == pytest.approx(0.55)
    assert s.multiplier(1.0, 0) == pytest.approx(0.1)


def test_onecycle_rises_to_peak_then_anneals():
    s = schedule(name="onecycle", pct_start=0.25, start_ratio=0.04, min_lr_ratio=0.0)
    values = [s.multiplier(f, 0) for f in (0.0, 0.125, 0.25, 0.625, 1.0)]
    assert values[0] == pytest.approx(0.04)
    assert values[0] < values[1] < values[2] == pytest.approx(1.0)
    assert values[2] > values[3] > values[4] == pytest.approx(0.0, abs=1e-12)


def test_warmup_scales_linearly_for_any_schedule():
    s = schedule(name="constant", warmup_epochs=2)
    assert s.multiplier(0, 0.5) == pytest.approx(0.25)
    assert s.multiplier(0, 1.0) == pytest.approx(0.5)
    assert s.multiplier(0, 2.0) == pytest.approx(1.0)


def lrs_by_epoch(s: LRSchedule, epochs: int, steps: int = 10) -> list[float]:
    """The multiplier at every step of a run of ``epochs`` epochs (progress by steps)."""
    total = epochs * steps
    return [s.multiplier(i / total, i / steps) for i in range(total + 1)]


def test_the_decay_starts_after_the_warmup_and_reaches_the_peak_first():
    # As torch's SequentialLR(LinearLR, CosineAnnealingLR): warmup multiplied into the decay
    # never reached the configured lr (max 0.905 of it with one warmup epoch of five).
    values = lrs_by_epoch(schedule(name="cosine", warmup_epochs=1, min_lr_ratio=0.1), 5)
    assert max(values) == pytest.approx(1.0) and values[10] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1)
    assert values[30] == pytest.approx(0.55)  # halfway through the four decay epochs
    step = schedule(name="step", warmup_epochs=2, step_size=3, gamma=0.5)
    assert [step.multiplier(0, e) for e in (2, 4.9, 5, 8)] == pytest.approx([1, 1, 0.5, 0.25])


def test_onecycle_with_a_warmup_rises_once():
    values = lrs_by_epoch(schedule(name="onecycle", warmup_epochs=1, start_ratio=0.04), 4)
    assert values[5] == pytest.approx(0.5)  # the warmup's ramp, not 0.04 × 0.5 of two ramps
    assert max(values) == pytest.approx(1.0) and values[-1] == pytest.approx(0.0, abs=1e-12)


def test_where_the_warmup_ended_survives_a_resume():
    s = schedule(name="cosine", warmup_epochs=1)
    s.multiplier(0.3, 1.2)  # the budget's clock: 30% of the time by the end of epoch one
    restored = schedule(name="cosine", warmup_epochs=1)
    restored.load_state_dict(s.state_dict())
    assert restored.multiplier(0.65, 2.0) == pytest.approx(s.multiplier(0.65, 2.0))
    assert restored.multiplier(0.65, 2.0) == pytest.approx(0.5)  # halfway from 0.3 to 1.0


def test_plateau_decays_after_patience_and_round_trips_state():
    s = schedule(name="plateau", plateau_patience=1, gamma=0.5)
    for value in (1.0, 0.9, 0.95, 0.96):  # improves, improves, then two bad epochs
        s.end_epoch(value, "min")
    assert s.multiplier(0, 5) == pytest.approx(0.5)
    restored = schedule(name="plateau", plateau_patience=1, gamma=0.5)
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict()
    s.end_epoch(math.nan, "min")  # non-finite metrics are ignored rather than counted
    assert s.state_dict() == restored.state_dict()


def test_plateau_in_max_mode():
    s = schedule(name="plateau", plateau_patience=0, gamma=0.1)
    s.end_epoch(0.5, "max")
    s.end_epoch(0.4, "max")
    assert s.plateau_factor == pytest.approx(0.1)


def test_other_schedules_ignore_plateau_feedback():
    s = schedule(name="cosine")
    for value in (1, 2, 3, 4):
        s.end_epoch(value, "min")
    assert s.plateau_factor == 1.0


def test_a_run_saved_before_warmup_then_decay_resumes_its_own_schedule():
    old = schedule(name="cosine", warmup_epochs=1)
    state = old.state_dict()
    del state["warmup_end"]  # as an earlier trainlab saved it: warmup multiplied the decay
    resumed = schedule(name="cosine", warmup_epochs=1)
    resumed.load_state_dict(state)
    assert resumed.multiplier(0.5, 5.0) == pytest.approx(0.5)  # no restart at the peak
    assert resumed.multiplier(0.1, 0.5) == pytest.approx(
        0.5 * (0.5 + 0.5 * math.cos(0.1 * math.pi))
    )

"""precision="bf16-mixed" (and "16-mixed", which Lightning turns into bf16-mixed on CPU): the probes run under the
trainer's autocast, the statistics in float64, and the figures equal a float32 run's within the documented
tolerance (README, "Precision and strategies"). Both runs probe once, before the first step, on the same weights."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import all_five

from lightning_probes import presets
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.schedules import every

# measured on this run (bf16's unit roundoff is 2^-9 ≈ 2e-3): spectrum scalars ≤ 1.1e-3 relative, concept IoUs
# ≤ 6.5e-3 relative (2e-3 absolute), the interaction fit's objective 9e-3 and its AND interactions 1.0e-2
# (relative L2 over all subsets and samples), LIB edge counts ±1 of ~700 (1.5e-3); the tolerances are those with a
# margin of 5-10. Not compared: the OR part and the salient counts of the sparse AND-OR fit (how the game splits
# between AND and OR terms moved by 56% relative L2 under bf16 noise at init, the objective by 0.9%), and the
# concepts' specialisation (a count-like share, 5%)
SPECTRUM_RTOL = 1e-2
CONCEPT_ATOL = 2e-2
INTERACTION_RTOL = 5e-2
COUNT_RTOL = 1e-2


class SeesAutocast(pl.Callback):
    """Records, from the first batch on (the probes at step 0 and the training step; not the fit-start checks),
    whether each forward pass ran under CPU autocast and in which dtype the head saw Φ. Listed before the monitors."""

    def __init__(self):
        self.seen: list[tuple[bool, torch.dtype]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            pl_module.classifier.register_forward_pre_hook(
                lambda mod, args: self.seen.append((torch.is_autocast_enabled("cpu"), args[0].dtype)))


def _run(precision):
    pl.seed_everything(0)
    monitors = list(presets.standard(**all_five()))
    for m in monitors:  # one probe, before the first step: the same weights in both runs
        m.schedule, m.at_end, m.images_every, m.on_error = every(1000), False, 0, "raise"
    seen = SeesAutocast()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, precision=precision, callbacks=[seen, *monitors],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(MLPClassifier(hidden=(32,)), DigitsDataModule(batch_size=64))
    return {m.name: m for m in monitors}, seen.seen


@pytest.fixture(scope="module")
def runs():
    return _run("32-true"), _run("bf16-mixed")


def _first(monitor):
    (step, scalars), = monitor.history
    assert step == 0
    return scalars


def test_probes_run_in_the_training_precision(runs):
    (_, seen32), (_, seen16) = runs
    assert seen32 and not any(on for on, _ in seen32) and {d for _, d in seen32} == {torch.float32}
    # training steps and probes alike: Φ reaches the head in bf16 under autocast
    assert seen16 and all(on for on, _ in seen16) and {d for _, d in seen16} == {torch.bfloat16}


def test_figures_equal_the_float32_run_within_the_documented_tolerance(runs):
    (fp32, _), (bf16, _) = runs
    spec32, spec16 = _first(fp32["spectrum"]), _first(bf16["spectrum"])
    assert spec32.keys() == spec16.keys()
    for key in ("n_features", "n_features_99", "regime", "rank"):
        assert spec16[key] == spec32[key], key
    for key in set(spec32) - {"n_features", "n_features_99", "regime", "rank", "nc4"}:
        assert spec16[key] == pytest.approx(spec32[key], rel=SPECTRUM_RTOL), key
    # condensation reads the float32 master weights: identical
    assert _first(bf16["condensation"]) == pytest.approx(_first(fp32["condensation"]), rel=1e-12)
    lib32, lib16 = _first(fp32["lib"]), _first(bf16["lib"])
    for key, value in lib32.items():
        assert lib16[key] == pytest.approx(value, rel=COUNT_RTOL, abs=1), key
    con32, con16 = _first(fp32["concepts"]), _first(bf16["concepts"])
    assert con16["n_units_explained"] == con32["n_units_explained"]
    for key in (k for k in con32 if k.startswith("mean_iou_range")):
        assert con16[key] == pytest.approx(con32[key], abs=CONCEPT_ATOL), key
    int32, int16 = _first(fp32["interactions"]), _first(bf16["interactions"])
    assert int16["objective"] == pytest.approx(int32["objective"], rel=INTERACTION_RTOL)
    # the AND interactions of the output, all subsets of all probe samples
    a, b = fp32["interactions"]._previous["i_and"], bf16["interactions"]._previous["i_and"]
    assert a.dtype == b.dtype == torch.float64
    assert float(torch.linalg.norm(b - a) / torch.linalg.norm(a)) < INTERACTION_RTOL


def test_16_mixed_on_cpu_is_bf16_mixed():
    with pytest.warns(UserWarning, match="Using `precision='bf16-mixed'` instead"):
        trainer = pl.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert trainer.precision == "bf16-mixed"

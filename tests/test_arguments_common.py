"""Malformed arguments of the base Monitor (schedule, probe data, triggers, ...), refused by every monitor, and
two short real fits that check the argument rules through ``Trainer.fit`` (the rules: ``arguments.py``)."""

from __future__ import annotations

import math
import re

import lightning.pytorch as pl
import pytest
from arguments import (
    X_NAN,
    X,
    Y,
    case,
    four_players,
    ids_are_unique,
    mlp,
    refused_at_construction,
    spectrum,
)
from torch.utils.data import DataLoader, TensorDataset

from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: spectrum(schedule=0), ValueError, r"every\(n\) needs a positive integer n, got 0", "base-schedule-0"),
    case(lambda: spectrum(schedule=-5), ValueError, "positive integer n, got -5", "base-schedule-negative"),
    case(lambda: spectrum(schedule="often"), TypeError, "schedule must be an int .* got str", "base-schedule-str"),
    case(lambda: spectrum(schedule=True), TypeError, "not a bool", "base-schedule-bool"),
    case(lambda: spectrum(probe_data="tset"), ValueError, "probe_data must be 'train', 'val', 'test'",
         "base-probe_data-name"),
    case(lambda: spectrum(probe_data=42), TypeError, "probe_data must be .* got int", "base-probe_data-int"),
    case(lambda: spectrum(probe_data=("x", "y")), TypeError, r"must hold tensors, e.g. a pair \(x, y\)",
         "base-probe_data-no-tensors"),
    case(lambda: spectrum(probe_data=(X, Y[:5])), ValueError, "x has 64 samples but y has 5",
         "base-probe_data-length-mismatch"),
    case(lambda: spectrum(max_samples=0), ValueError, "max_samples and batch_size must be positive integers",
         "base-max_samples-0"),
    case(lambda: spectrum(max_samples=2.5), ValueError, "must be positive integers, got 2.5",
         "base-max_samples-float"),
    case(lambda: spectrum(max_samples="64"), ValueError, "must be positive integers, got '64'", "base-max_samples-str"),
    case(lambda: spectrum(batch_size=-1), ValueError, "must be positive integers, got 512, -1", "base-batch_size-neg"),
    case(lambda: spectrum(triggers=["MF"]), TypeError, r"triggers must be Trigger objects .* got str",
         "base-trigger-str"),
    case(lambda: spectrum(on_error="ignore"), ValueError, "on_error must be 'warn' or 'raise'",
         "base-on_error-unknown"),
    case(lambda: spectrum(images_every=-1), ValueError, "images_every must be a non-negative integer",
         "base-images_every-neg"),
    case(lambda: spectrum(images_every=1.5), ValueError, "images_every must be a non-negative integer, got 1.5",
         "base-images_every-float"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR)


# ------------------------------------------------------------------------------------ the same through Trainer.fit
def digits_loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=16)


def test_fit_with_nan_probe_data_warns_skips_every_probe_and_trains_on():
    monitor = FeatureSpectrumMonitor(probe_data=(X_NAN, Y), schedule=every(1), images_every=0)
    pl.seed_everything(0, verbose=False)
    t = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.warns(UserWarning, match="NaN or Inf in 1 of 64") as record:
        t.fit(mlp(), digits_loader())
    assert t.global_step == 2  # training was not interrupted
    assert monitor.history == [] and monitor.failures == 3  # steps 0, 1 and 2 probed, all skipped
    # one warning for the kind of failure, one more when three probes in a row have failed (_failures.py)
    messages = [str(w.message) for w in record if "lightning-probes" in str(w.message)]
    assert len(messages) == 2 and "probe at step 0 failed" in messages[0] and "3 probes in a row" in messages[1]
    assert [k for k in t.callback_metrics if k.startswith("probes/")] == ["probes/spectrum/failed_probes"]
    assert all(math.isfinite(float(v)) for v in t.callback_metrics.values())


def test_fit_with_probe_data_the_model_cannot_take_fails_at_fit_start_even_with_warn():
    monitor = InteractionMonitor(four_players(32), num_samples=2, max_samples=32, probe_data=(X[:, :32], Y),
                                 on_error="warn")
    t = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.raises(ValueError, match=re.escape("InteractionMonitor: the model cannot run on the probe inputs "
                                                   "(samples of shape (32,), dtype torch.float32)")):
        t.fit(mlp(), digits_loader())
    assert t.global_step == 0 and monitor.history == []

"""Every shipped config runs through the `lightning-probes fit` CLI (shortened), and its monitors log."""

import glob
import os

import pytest
from helpers import read_events

from lightning_probes.cli import main

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_there_are_configs():
    assert any(path.endswith("digits_spectrum.yaml") for path in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_config_fits_and_logs_probes(config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # configs log under ./runs
    main(["fit", "--config", config, "--trainer.max_steps=6", "--trainer.max_epochs=1"])
    out = capsys.readouterr().out
    assert "TensorBoard logs:" in out
    events = read_events(str(tmp_path / "runs"))
    assert any(tag.startswith("probes/") for tag in events.scalars)
    assert events.charts()  # the dashboard layout

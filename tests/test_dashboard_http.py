"""The dashboard as a person sees it: a real TensorBoard server on loopback serves our layout and tags."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import lightning.pytorch as pl
import pytest
from helpers import trainer

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def monitors():
    """All monitors that can run on the digits MLP with the head alone (extended as monitors are added)."""
    return [FeatureSpectrumMonitor(schedule=every(5), images_every=1, max_samples=200)]


def test_tensorboard_serves_the_merged_layout_and_the_probe_tags(tmp_path, monitors):
    pl.seed_everything(0)
    trainer(tmp_path, max_steps=10, callbacks=monitors).fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--port", str(port),
         "--host", "127.0.0.1", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        tags = {}
        while time.monotonic() < deadline:  # wait for the server, then for it to load the run
            try:
                tags = _get(f"{base}/data/plugin/scalars/tags")
                if any("probes/spectrum/regime" in run_tags for run_tags in tags.values()):
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(1)
        run_tags = next(iter(tags.values()))
        assert {"probes/spectrum/regime", "probes/spectrum/n_features", "probes/spectrum/nc1"} <= set(run_tags)
        layout = _get(f"{base}/data/plugin/custom_scalars/layout")
        categories = {c["title"]: [ch["title"] for ch in c["chart"]] for c in layout["category"]}
        for monitor in monitors:
            assert f"probes/{monitor.name}" in categories
        assert categories["probes/spectrum"][0] == "regime and features used"  # key chart first
        images = _get(f"{base}/data/plugin/images/tags")
        assert "probes/spectrum/eigenvalues" in next(iter(images.values()))
    finally:
        server.terminate()
        server.wait(timeout=30)

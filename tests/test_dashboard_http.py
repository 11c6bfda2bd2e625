"""The dashboard as a person sees it: a real TensorBoard server on loopback serves our layout and tags."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# the chart each monitor's category must open with: the figure a user looks at first
KEY_CHARTS = {
    "spectrum": "regime (1 = MF, 0 = EF, -1 = below)",
    "condensation": "condensed directions",
    "interactions": "salient interactions",
    "lib": "directions kept: LIB vs PCA",
    "concepts": "specialisation (highest - lowest range)",
}
KEY_TAGS = {
    "spectrum": ["regime", "n_features", "nc1"],
    "condensation": ["features.0/n_directions", "features.0/relative_change"],
    "interactions": ["n_salient", "emerged", "forgotten"],
    "lib": ["features.0/n_directions", "features.0/n_directions_pca"],
    "concepts": ["specialisation", "n_units_explained"],
}


def test_tensorboard_serves_the_merged_layout_and_the_probe_tags(five_monitor_run):
    monitors = five_monitor_run.monitors
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", five_monitor_run.log_dir, "--port", str(port),
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
                if any("probes/concepts/specialisation" in run_tags for run_tags in tags.values()):
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(1)
        run_tags = set(next(iter(tags.values())))
        expected = {f"probes/{name}/{tag}" for name, tags in KEY_TAGS.items() for tag in tags}
        assert expected <= run_tags, sorted(expected - run_tags)
        layout = _get(f"{base}/data/plugin/custom_scalars/layout")
        categories = {c["title"]: [ch["title"] for ch in c["chart"]] for c in layout["category"]}
        assert list(categories) == [f"probes/{m.name}" for m in monitors]  # one category per monitor, in order
        for name, chart in KEY_CHARTS.items():
            assert categories[f"probes/{name}"][0] == chart  # key chart first
        images = set(next(iter(_get(f"{base}/data/plugin/images/tags").values())))
        for name in KEY_CHARTS:  # every monitor's pictures are served too
            assert any(tag.startswith(f"probes/{name}/") for tag in images), name
    finally:
        server.terminate()
        server.wait(timeout=30)

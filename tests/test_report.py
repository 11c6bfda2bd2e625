"""`lightning-probes report`: one self-contained HTML page from a run's event files."""

import re

import lightning.pytorch as pl
import pytest
from helpers import trainer

from lightning_probes.cli import main
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.report import read_run, render_html
from lightning_probes.schedules import every


@pytest.fixture(scope="module")
def spectrum_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    pl.seed_everything(0)
    t = trainer(root, max_steps=12, callbacks=[FeatureSpectrumMonitor(schedule=every(4), images_every=2)])
    t.fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    return t.log_dir


def test_report_has_a_section_per_monitor_present_with_curves_tables_and_pictures(spectrum_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    main(["report", spectrum_run, "--out", str(out)])
    page = out.read_text()
    assert "reading event file 1/" in capsys.readouterr().err  # progress while reading
    assert '<section id="spectrum">' in page
    assert 'id="condensation"' not in page and 'id="interactions"' not in page  # only monitors present
    assert page.count("data:image/png;base64,") >= 5  # dashboard charts + latest pictures, embedded
    assert "<th>regime</th>" in page  # the regime history table
    assert "n_features" in page and "hparams.yaml" in page  # final values and the run's settings
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_read_run_returns_the_logged_probe_points(spectrum_run):
    run = read_run(spectrum_run)
    assert [s for s, _ in run.scalars["probes/spectrum/regime"]] == [0, 4, 8, 12]
    assert "regime and features used" in run.charts["probes/spectrum"]
    assert run.monitors() == ["spectrum"]
    assert "No lightning-probes monitor" not in render_html(run)


def test_missing_or_empty_directories_get_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        main(["report", str(tmp_path / "nope")])
    assert missing.value.code == 2 and "no such log directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path)])
    assert "no TensorBoard event files" in capsys.readouterr().err


def test_a_run_with_all_five_monitors_gets_every_section_and_its_final_table(five_monitor_run, tmp_path):
    out = tmp_path / "five.html"
    main(["report", five_monitor_run.log_dir, "--out", str(out), "--quiet"])
    page = out.read_text()
    sections = [page.index(f'<section id="{m.name}">') for m in five_monitor_run.monitors]
    assert sections == sorted(sections)  # all five, in the dashboard's order
    for table in ("regime_history", "layers", "strongest", "summary", "explanations"):
        # a text table is written only when it changed: the page says since when it is unchanged
        assert re.search(rf"<h3>{table} \(step (10|[05], unchanged through step 10)\)</h3>", page), table
    # the final tables: regime history, condensation per layer, top interactions, concept formulas
    for header in ("<th>regime</th>", "<th>neurons analysed</th>", "<th>players</th>", "<th>formula</th>"):
        assert header in page, header
    # a curve for every chart of the layout that has data, plus the latest pictures: all embedded
    run = read_run(five_monitor_run.log_dir)
    charts = sum(len(c) for c in run.charts.values())
    assert page.count("data:image/png;base64,") >= len(run.images) + charts // 2
    assert "http" not in page.replace("http-equiv", "")

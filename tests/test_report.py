"""`lightning-probes report`: one self-contained HTML page from a run's event files."""

import glob
import html
import os
import random
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import lightning.pytorch as pl
import pytest
import torch
from helpers import trainer

from lightning_probes.cli import main
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.report import read_run, read_runs, render_html
from lightning_probes.schedules import every

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert "regime (1 = MF, 0 = EF, -1 = below)" in run.charts["probes/spectrum"]
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
    for monitor in five_monitor_run.monitors:  # each section's heading is its monitor class's title
        assert html.escape(type(monitor).title) in page, type(monitor).title
    # a curve for every chart of the layout that has data, plus the latest pictures: all embedded
    run = read_run(five_monitor_run.log_dir)
    charts = sum(len(c) for c in run.charts.values())
    assert page.count("data:image/png;base64,") >= len(run.images) + charts // 2
    assert "http" not in page.replace("http-equiv", "")


def test_a_section_takes_its_heading_from_the_monitor_class_a_users_own_included():
    from lightning_probes.monitors.base import Monitor
    from lightning_probes.report import _section_title

    class Sharpness(Monitor):  # a user's own monitor, imported before the report is written
        name = "sharpness"
        title = "Sharpness (my lab, 2026)"

    assert _section_title("sharpness") == "Sharpness (my lab, 2026)"
    assert _section_title("spectrum") == FeatureSpectrumMonitor.title
    assert _section_title("no_such_monitor") == "no_such_monitor"  # unknown: the name itself


# ---------------------------------------------------------------- safe: every string escaped
HOSTILE = "<svg onload=alert(1)>\"'&<b>x<i>[("  # no "/": it splits a tag's path


class _Elements(HTMLParser):
    """The elements of a page with their attribute names, in order; and the attribute values."""

    def __init__(self):
        super().__init__()
        self.elements, self.values = [], []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, tuple(sorted(name for name, _ in attrs))))
        self.values += [value or "" for _, value in attrs]


def _planted_logs(root, s: str) -> str:
    """A run whose every string holds ``s``: folder, monitor, module, tag, chart, text, concept, hparam."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = os.path.join(root, f"run{s}", "version_0")
    writer = SummaryWriter(run_dir)
    prefix = f"probes/mon{s}/"
    for step in range(3):
        writer.add_scalar(f"{prefix}module{s}/value{s}", float(step), step)
        writer.add_scalar(f"train/loss{s}", 1.0 / (step + 1), step)
    writer.add_scalar(prefix + "failed_probes", 1.0, 2)
    writer.add_text(prefix + "failures", f"1 failed probe(s).\n\n| step | error | message |\n|---|---|---|\n"
                                         f"| 2 | ValueError | {s} |", 2)
    writer.add_text(f"{prefix}table{s}", f"para {s}\n\n| unit{s} | concept |\n|---|---|\n| 1 | concept{s} |\n\n"
                                         f"pre {s}\nline {s}", 2)
    writer.add_image(f"{prefix}picture{s}", torch.zeros(3, 4, 4), 2)
    writer.add_custom_scalars({f"probes/mon{s}": {f"chart{s}": ["Multiline", [re.escape(prefix) + ".*"]]}})
    writer.close()
    with open(os.path.join(run_dir, "hparams.yaml"), "w") as fh:
        fh.write(f"lr: 0.1\nname: '{s}'\n")
    with open(os.path.join(run_dir, "config.yaml"), "w") as fh:
        fh.write(f"model:\n  hidden: {s}\n")
    return str(root)


def test_markup_planted_in_every_rendered_string_stays_text(tmp_path):
    pages = {}
    for label, s in (("plain", "plain"), ("hostile", HOSTILE)):
        root = _planted_logs(tmp_path / label, s)
        out = tmp_path / f"{label}.html"
        main(["report", root, "--out", str(out), "--quiet"])
        pages[label] = out.read_text()
    parsed = {}
    for label, page in pages.items():
        parser = _Elements()
        parser.feed(page)
        parsed[label] = parser
    # the same elements with the same attributes, in the same order: nothing the report did not write
    assert parsed["hostile"].elements == parsed["plain"].elements
    assert len(parsed["plain"].elements) > 30
    assert "<svg" not in pages["hostile"] and "<i>" not in pages["hostile"]  # nowhere unescaped, attributes included
    # and every planted string is on the page as text (escaped), in each place it was planted
    page = pages["hostile"]
    escaped = html.escape(HOSTILE, quote=False)
    for where in (f"run{escaped}", f"module{escaped}", f"concept{escaped}", f"para {escaped}", f"chart{escaped}",
                  f"name: '{escaped}'".replace("'", "&#39;"), f"loss{escaped}"):
        assert where.replace('"', "&#34;").replace("'", "&#39;") in page, where


# ---------------------------------------------------------------- honest: damaged input
def _copy_run(spectrum_run, dest) -> tuple[str, str]:
    shutil.copytree(spectrum_run, dest)
    (event,) = glob.glob(os.path.join(dest, "events.out.tfevents.*"))
    return str(dest), event


def test_damaged_event_files_are_named_with_the_step_data_is_missing_from_and_exit_non_zero(
        spectrum_run, tmp_path, capsys):
    full = read_run(spectrum_run)
    steps = [s for s, _ in full.scalars["probes/spectrum/regime"]]
    for kind in ("random bytes", "truncated", "all random"):
        logdir, event = _copy_run(spectrum_run, tmp_path / kind.replace(" ", "_"))
        data = bytearray(open(event, "rb").read())
        rng = random.Random(0)
        if kind == "random bytes":  # 4 KiB of noise a third of the way in
            third = len(data) // 3
            data[third:third + 4096] = bytes(rng.randrange(256) for _ in range(4096))
        elif kind == "truncated":
            data = data[: len(data) // 2]
        else:
            data = bytearray(rng.randrange(256) for _ in range(len(data)))
        open(event, "wb").write(bytes(data))
        out = os.path.join(logdir, "r.html")
        with pytest.raises(SystemExit) as exited:
            main(["report", logdir, "--out", out, "--quiet"])
        err = capsys.readouterr().err
        assert exited.value.code == 3, kind
        run = read_run(logdir)
        (damage,) = run.damage
        read = [s for s, _ in run.scalars.get("probes/spectrum/regime", [])]
        assert read == steps[: len(read)] and len(read) < len(steps), kind  # a shorter run, said to be one
        after = "from its first event" if damage.last_step is None else f"after step {damage.last_step}"
        assert os.path.basename(event) in err and f"data {after} is missing" in err, kind
        page = open(out).read()
        assert "Incomplete input" in page and f"data {after} is missing" in page, kind
        assert (damage.last_step is None) == (kind == "all random"), kind
        main(["report", logdir, "--out", out, "--quiet", "--partial"])  # asked for: exit 0, still said
        assert "warning: damaged event file" in capsys.readouterr().err
        assert "Incomplete input" in open(out).read()


def test_odd_entries_are_skipped_with_a_note_and_bad_settings_named(spectrum_run, tmp_path, capsys):
    logdir, _ = _copy_run(spectrum_run, tmp_path / "odd")
    os.mkdir(os.path.join(logdir, "events.out.tfevents.123.host.1.0"))
    out = os.path.join(logdir, "r.html")
    main(["report", logdir, "--out", out, "--quiet"])
    assert "skipped events.out.tfevents.123.host.1.0: a directory named like an event file" in capsys.readouterr().err
    assert "a directory named like an event file" in open(out).read()
    with open(os.path.join(logdir, "hparams.yaml"), "wb") as fh:
        fh.write(b"lr: \xff\xfe\n")
    with pytest.raises(SystemExit) as exited:
        main(["report", logdir, "--out", out, "--quiet"])
    assert exited.value.code == 2
    assert f"{os.path.join(logdir, 'hparams.yaml')} is not UTF-8" in capsys.readouterr().err


def _write_steps(run_dir, steps, value=1.0):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir)
    for step in steps:
        writer.add_scalar("probes/spectrum/rank", value, step)
        writer.add_scalar("train/loss", value, step)
    writer.close()


def test_two_writers_in_one_directory_are_reported_apart(tmp_path, capsys):
    run_dir = str(tmp_path / "version_0")
    _write_steps(run_dir, range(0, 10, 2), 1.0)
    time.sleep(1.1)  # event file names carry the second they were opened
    _write_steps(run_dir, range(0, 6, 2), 2.0)
    runs, _ = read_runs(str(tmp_path))
    assert len(runs) == 2 and all("two writers" in r.notes[0] for r in runs)
    assert [[s for s, _ in r.scalars["probes/spectrum/rank"]] for r in runs] == [[0, 2, 4, 6, 8], [0, 2, 4]]
    assert [r.scalars["probes/spectrum/rank"][0][1] for r in runs] == [1.0, 2.0]
    out = tmp_path / "r.html"
    main(["report", str(tmp_path), "--out", str(out), "--quiet"])
    assert "two writers logged into version_0" in capsys.readouterr().err
    page = out.read_text()
    assert page.count("<article ") == 2 and "[writer 1 of 2" in page and "[writer 2 of 2" in page


def test_a_folder_with_two_runs_gets_a_section_per_run_each_with_its_own_probe_steps(tmp_path, capsys):
    _write_steps(str(tmp_path / "exp" / "version_0"), range(0, 10, 2))
    _write_steps(str(tmp_path / "exp" / "version_1"), range(0, 30, 5))
    root = str(tmp_path / "exp")
    runs, _ = read_runs(root)
    assert [r.name for r in runs] == ["version_0", "version_1"]
    assert [r.probe_steps("spectrum") for r in runs] == [[0, 2, 4, 6, 8], [0, 5, 10, 15, 20, 25]]
    out = tmp_path / "r.html"
    main(["report", root, "--out", str(out), "--quiet"])
    page = out.read_text()
    assert "<title>lightning-probes report: exp (2 runs)</title>" in page
    assert '<a href="#run-1">version_0</a>' in page and '<a href="#run-2">version_1</a>' in page  # contents
    sections = page.split("<article ")[1:]
    assert len(sections) == 2 and "Run: version_0" in sections[0] and "Run: version_1" in sections[1]
    # each run's own counts: 5 and 6 probes, never 11 merged
    assert "<td>rank</td><td>8</td><td>1</td><td>5</td>" in sections[0]
    assert "<td>rank</td><td>25</td><td>1</td><td>6</td>" in sections[1]
    main(["report", root, "--run", "version_1", "--out", str(out), "--quiet"])
    page = out.read_text()
    assert page.count("<article ") == 1 and "<title>lightning-probes report: version_1</title>" in page
    with pytest.raises(SystemExit) as exited:
        main(["report", root, "--run", "version_2", "--quiet"])
    assert exited.value.code == 2 and "no run named 'version_2'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds 2 runs"):
        read_run(root)


# ---------------------------------------------------------------- the command
@pytest.mark.slow
def test_the_command_lists_report_prints_its_version_and_does_not_warn_as_a_console_script(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "report" in out and "fit" in out
    main(["--version"])
    assert capsys.readouterr().out.startswith("lightning-probes ")
    script = ("import sys; sys.argv = ['lightning-probes', 'fit', '--help']; "
              "from lightning_probes.cli import main; main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "--trainer" in done.stdout
    assert "intended to run from within Python" not in done.stderr

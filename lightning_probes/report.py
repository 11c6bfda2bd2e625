"""``lightning-probes report LOGDIR``: one self-contained HTML page from finished runs' TensorBoard logs.

A *run* is a directory that holds event files (as TensorBoard counts runs): ``LOGDIR`` with one run gives that
run's page; with several (``version_0``, ``version_1``, …) one section per run under a table of contents, never
merged. Each run's page has a section per monitor present (key curves drawn from the dashboard layout, the last
value of every scalar, failed probes, the latest text tables and pictures) and the run's settings (LightningCLI's
``config.yaml`` and ``hparams.yaml`` in the run's directory). Pictures are embedded as data URIs, so the file can be
mailed as it is.

The event files are read record by record with their CRC checks, with TensorBoard's rules:

- a ``SessionLog.START`` event at step ``s`` (what a resumed monitor writes) hides every point read before it at
  step ``>= s`` — TensorBoard's purge of orphaned data — so a killed and resumed run counts as one run;
- a record that is cut short or fails its checksum ends what can be read of that file; the report names the file,
  the bytes left unread and the last step read, on stderr and in the page, and ``write_report`` refuses (exit 3
  in the CLI) unless ``partial=True``;
- two event files in one directory that log the same tag at the same step with no restart marker between them are
  two writers (two runs given the same ``version=``): they are reported apart, one section each, with a note.

The page is rendered from a Jinja2 template with autoescaping (:mod:`lightning_probes._report_template`).
"""

from __future__ import annotations

import base64
import difflib
import os
import re
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lightning_probes.tensorboard import figure_png, line_figure

if TYPE_CHECKING:
    from lightning_probes.monitors.base import Monitor

__all__ = ["Damage", "DamagedLogs", "RunLogs", "find_runs", "read_run", "read_runs", "render_html", "write_report"]

EVENT_FILE = "events.out.tfevents."


def _builtin_monitors() -> list[type[Monitor]]:
    """The five monitors, in the order the dashboard shows them (imported here: report.py is read by the CLI before
    any monitor is built, and the monitors do not import it)."""
    from lightning_probes.monitors.concepts import ConceptMonitor
    from lightning_probes.monitors.condensation import CondensationMonitor
    from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
    from lightning_probes.monitors.interactions import InteractionMonitor
    from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor

    return [FeatureSpectrumMonitor, CondensationMonitor, InteractionMonitor, InteractionBasisMonitor, ConceptMonitor]


def _section_order() -> list[str]:
    """Monitor names in the dashboard's order; anything else under probes/ follows in name order."""
    return [cls.name for cls in _builtin_monitors()]


def _section_title(name: str) -> str:
    """A report section's heading: the title of the monitor class whose default name is ``name`` (a user's own
    Monitor subclass included, once imported), else the name itself."""
    from lightning_probes.monitors.base import Monitor

    pending, seen = list(Monitor.__subclasses__()), set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.name == name and "title" in vars(cls):
            return cls.title
        pending.extend(cls.__subclasses__())
    return name


_LAYOUT_TAG = "custom_scalars__config__"
_NOT_A_WRITER_TAG = {"hp_metric"}  # Lightning writes it at step 0 every time a fit starts, resumed or not


@dataclass
class Damage:
    """What could not be read of one event file."""

    path: str
    offset: int  # bytes read up to the bad record
    size: int  # the file's size
    last_step: int | None  # the last step read from the file (None: nothing)
    reason: str

    def describe(self, root: str | None = None) -> str:
        name = os.path.relpath(self.path, root) if root else self.path
        after = "from its first event" if self.last_step is None else f"after step {self.last_step}"
        return (f"{name}: {self.reason} at byte {self.offset} of {self.size}; {self.size - self.offset} bytes were "
                f"not read, so data {after} is missing.")


class DamagedLogs(ValueError):
    """Event files could not be read to their end (and a partial report was not asked for)."""


@dataclass
class RunLogs:
    """Everything one run's event files hold that the report uses, after TensorBoard's purge of orphaned data."""

    logdir: str
    name: str = ""
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    images: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # the latest picture of each tag
    charts: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # category -> chart -> tag regexes
    settings: dict[str, str] = field(default_factory=dict)  # file name -> text
    damage: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # restarts, skipped entries, split writers
    restarts: list[int] = field(default_factory=list)  # steps at which a resumed run marked its restart

    def monitors(self) -> list[str]:
        names = {tag.split("/")[1] for tag in [*self.scalars, *self.texts, *self.images]
                 if tag.startswith("probes/") and tag.count("/") >= 2}
        order = _section_order()
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def probe_steps(self, monitor: str) -> list[int]:
        """The steps at which ``monitor`` logged any scalar (its successful probes), sorted."""
        prefix = f"probes/{monitor}/"
        return sorted({s for t, pts in self.scalars.items() if t.startswith(prefix)
                       and not t.endswith("/failed_probes") for s, _ in pts})


# ---------------------------------------------------------------------------------------------- finding runs
def find_runs(root: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The runs under ``root``: ``([(run directory, [event files in TensorBoard's order]), ...], notes)``.

    A directory whose name looks like an event file is skipped with a note (TensorBoard skips it too).

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such log directory: {root!r}")
    runs, notes = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for d in dirnames:
            if d.startswith(EVENT_FILE):
                notes.append(f"skipped {os.path.relpath(os.path.join(dirpath, d), root)}: a directory named like an "
                             "event file.")
        files = sorted(os.path.join(dirpath, f) for f in filenames if f.startswith(EVENT_FILE))
        if files:
            runs.append((dirpath, files))
    runs.sort(key=lambda r: r[0])
    return runs, notes


def _run_name(root: str, run_dir: str) -> str:
    rel = os.path.relpath(run_dir, root)
    return os.path.basename(os.path.abspath(root)) if rel == "." else rel


# ---------------------------------------------------------------------------------------------- reading records
def _records(path: str) -> Iterator[tuple[bytes | None, Damage | None]]:
    """The records of a TFRecord file with their CRC checks: yields ``(data, None)``, and ``(None, Damage)`` once
    where a record is cut short or fails its checksum (nothing after it can be trusted to be framed right)."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset = 0
        while True:
            header = fh.read(12)
            if not header:
                return
            if len(header) < 12:
                yield None, Damage(path, offset, size, None, "a record cut short in its header")
                return
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != crc:
                yield None, Damage(path, offset, size, None, "a record whose header fails its checksum")
                return
            body = fh.read(length + 4)
            if len(body) < length + 4:
                yield None, Damage(path, offset, size, None, "a record cut short")
                return
            if masked_crc32c(body[:length]) != struct.unpack("<I", body[length:])[0]:
                yield None, Damage(path, offset, size, None, "a record whose data fails its checksum")
                return
            offset += 12 + length + 4
            yield body[:length], None


@dataclass
class _Item:
    step: int
    value: Any
    file: int  # index of the event file it came from


class _Accumulator:
    """TensorBoard's EventAccumulator rules on parsed events: START purges, items tagged with their file."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[_Item]] = {}
        self.texts: dict[str, list[_Item]] = {}
        self.images: dict[str, list[_Item]] = {}
        self.layouts: list[bytes] = []
        self.restarts: list[int] = []
        self.restarted: set[tuple[int, int]] = set()  # (file, step) of each restart mark
        self.file_version = 0.0

    def purge(self, step: int) -> None:
        for store in (self.scalars, self.texts, self.images):
            for tag in list(store):
                store[tag] = [item for item in store[tag] if item.step < step]

    def add(self, event: Any, file: int) -> None:
        from tensorboard.compat.proto import event_pb2

        if event.HasField("file_version"):
            self.file_version = _file_version(event.file_version)
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START \
                and self.file_version >= 2:  # TensorBoard honours START only from event files of version 2 on
            self.purge(event.step)
            self.restarts.append(event.step)
            self.restarted.add((file, event.step))
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            plugin = value.metadata.plugin_data.plugin_name
            if kind == "simple_value":
                self.scalars.setdefault(value.tag, []).append(_Item(event.step, float(value.simple_value), file))
            elif kind == "image":
                self.images.setdefault(value.tag, []).append(_Item(event.step, value.image.encoded_image_string, file))
            elif kind == "tensor":
                if plugin == "scalars":
                    self.scalars.setdefault(value.tag, []).append(_Item(event.step, _tensor_float(value.tensor), file))
                elif value.tag == _LAYOUT_TAG and value.tensor.string_val:
                    self.layouts.append(value.tensor.string_val[0])
                elif plugin == "text" and value.tensor.string_val:
                    text = value.tensor.string_val[0].decode("utf-8", errors="replace")
                    self.texts.setdefault(value.tag.removesuffix("/text_summary"), []).append(
                        _Item(event.step, text, file))


def _file_version(text: str) -> float:
    match = re.fullmatch(r"brain\.Event:(\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match else 0.0


def _tensor_float(tensor: Any) -> float:
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(tensor).item())


def _read_file(path: str, acc: _Accumulator, file: int) -> Damage | None:
    from tensorboard.compat.proto import event_pb2

    last_step = None
    for data, damage in _records(path):
        if damage is not None:
            damage.last_step = last_step
            return damage
        try:
            event = event_pb2.Event.FromString(data)
        except Exception:  # a record with a valid checksum that is not an Event: not an event file we can read
            return Damage(path, 0, os.path.getsize(path), last_step, "a record that is not a TensorBoard event")
        acc.add(event, file)
        if event.summary.value:
            last_step = event.step if last_step is None else max(last_step, event.step)
    return None


def _duplicated(acc: _Accumulator) -> tuple[str, int] | None:
    """A (tag, step) logged by two event files after the purge: two writers in one directory, or None.

    Not counted: the step just before a restart mark (``s - 1`` for a mark at ``s``). A resumed monitor marks the
    step after the checkpoint's, so the points logged at the checkpoint's step stay; Lightning logged the training
    metrics of the batch after the checkpoint at that step too, and the resumed run logs them again there.
    """
    for tag, items in sorted(acc.scalars.items()):
        if tag in _NOT_A_WRITER_TAG:
            continue
        seen: dict[int, int] = {}
        for item in items:
            first = seen.setdefault(item.step, item.file)
            if first != item.file and (item.file, item.step + 1) not in acc.restarted:
                return tag, item.step
    return None


def _to_run(acc: _Accumulator, run_dir: str, name: str) -> RunLogs:
    from tensorboard.plugins.custom_scalar import layout_pb2

    run = RunLogs(run_dir, name, restarts=list(acc.restarts))
    for tag, items in acc.scalars.items():
        run.scalars[tag] = sorted(((i.step, i.value) for i in items), key=lambda p: p[0])
    for tag, items in acc.texts.items():
        run.texts[tag] = sorted(((i.step, i.value) for i in items), key=lambda p: p[0])
    for tag, items in acc.images.items():
        if items:
            latest = max(items, key=lambda i: i.step)  # the later writer wins a tie, as max keeps the first: fine
            run.images[tag] = (latest.step, latest.value)
    for blob in acc.layouts:
        layout = layout_pb2.Layout.FromString(blob)
        for category in layout.category:
            charts = run.charts.setdefault(category.title, {})
            for chart in category.chart:
                charts.setdefault(chart.title, list(chart.multiline.tag))
    return run


def _settings(run_dir: str) -> dict[str, str]:
    out = {}
    for name in ("config.yaml", "hparams.yaml"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    out[name] = fh.read()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not UTF-8 text ({err}); fix or remove that file.") from None
    return out


def _read_one(run_dir: str, files: list[str], name: str, progress: Callable[[str], None] | None) -> list[RunLogs]:
    """One run directory: one RunLogs, or one per event file when two writers logged into it."""
    acc, damage = _Accumulator(), []
    total, done = sum(os.path.getsize(f) for f in files), 0
    for i, path in enumerate(files):
        if progress:
            progress(f"reading event file {i + 1}/{len(files)} ({done / 2**20:.1f} of {total / 2**20:.1f} MiB): "
                     f"{os.path.relpath(path, run_dir)}")
        bad = _read_file(path, acc, i)
        if bad is not None:
            damage.append(bad)
        done += os.path.getsize(path)
    settings = _settings(run_dir)
    clash = _duplicated(acc)
    if clash is None:
        run = _to_run(acc, run_dir, name)
        run.damage, run.settings = damage, settings
        if run.restarts:
            run.notes.append(f"resumed from step(s) {', '.join(str(s - 1) for s in run.restarts)}: the points the "
                             "interrupted run logged after its checkpoint are hidden, as TensorBoard hides them.")
        return [run]
    tag, step = clash
    note = (f"two writers logged into {name}: {tag!r} at step {step} is in two event files with no restart marker "
            "between them (two runs given the same version=, or a resume by a writer that marks no restart); each "
            "event file is reported apart.")
    runs = []
    for i, path in enumerate(files):  # again, each file alone, so no purge reaches across writers
        single = _Accumulator()
        bad = _read_file(path, single, i)
        run = _to_run(single, run_dir, f"{name} [writer {i + 1} of {len(files)}: {os.path.basename(path)}]")
        run.damage, run.settings, run.notes = ([bad] if bad else []), settings, [note]
        runs.append(run)
    return runs


def read_runs(logdir: str, progress: Callable[[str], None] | None = None) -> tuple[list[RunLogs], list[str]]:
    """Read every run under ``logdir``: ``(runs, notes)`` (notes: entries skipped).

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        ValueError: it holds no TensorBoard event files, or a run's settings file is not UTF-8.
    """
    found, notes = find_runs(logdir)
    if not found:
        raise ValueError(
            f"no TensorBoard event files under {logdir!r}; point at the directory a TensorBoardLogger wrote "
            "(e.g. runs/<name>/version_0)." + (f" ({' '.join(notes)})" if notes else "")
        )
    runs = []
    for run_dir, files in found:
        runs.extend(_read_one(run_dir, files, _run_name(logdir, run_dir), progress))
    return runs, notes


def read_run(logdir: str, progress: Callable[[str], None] | None = None, run: str | None = None) -> RunLogs:
    """Read the one run under ``logdir`` (or the one named ``run``, a path relative to ``logdir``).

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        ValueError: no event files; several runs and no ``run`` chosen; no run of that name.
    """
    runs, notes = read_runs(logdir, progress)
    if run is not None:
        runs = _pick(runs, run)
    if len(runs) > 1:
        raise ValueError(f"{logdir!r} holds {len(runs)} runs ({', '.join(r.name for r in runs)}); choose one with "
                         "run=... (--run NAME), or use read_runs.")
    runs[0].notes[:0] = notes
    return runs[0]


def _pick(runs: list[RunLogs], name: str) -> list[RunLogs]:
    chosen = [r for r in runs if r.name == name or r.name.startswith(name + " [writer ")]
    if not chosen:
        names = [r.name for r in runs]
        close = difflib.get_close_matches(name, names, n=3)
        raise ValueError(f"no run named {name!r}; the runs are: {', '.join(names)}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return chosen


# ---------------------------------------------------------------------------------------------- the page
def _chart_png(title: str, series: dict[str, list[tuple[int, float]]]) -> bytes:
    """One report chart: the dashboard's line chart (``tensorboard.line_figure``, as TensorBoard pictures are drawn),
    each series labelled by its tag below ``probes/<monitor>/``."""
    lines = {tag.split("/", 2)[-1]: ([step for step, _ in points], [value for _, value in points])
             for tag, points in series.items()}
    return figure_png(line_figure(lines, title, xlabel="step", size=(5.2, 3.2)))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _markdown_blocks(text: str) -> list[dict[str, Any]]:
    r"""Blocks separated by blank lines: markdown pipe tables become tables, single lines paragraphs, other blocks
    preformatted text (plain strings; the template escapes them).

    Example:
        >>> blocks = _markdown_blocks("Unit 3 is dead.\n\n| a | b |\n|---|---|\n| 1 | x \\| y |")
        >>> blocks[0], blocks[1]["head"], blocks[1]["rows"]
        ({'kind': 'p', 'text': 'Unit 3 is dead.'}, ['a', 'b'], [['1', 'x | y']])
    """
    return [_block(block) for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]


def _block(block: str) -> dict[str, Any]:
    lines = block.strip().splitlines()
    if len(lines) >= 2 and all(line.strip().startswith("|") for line in lines) and set(lines[1]) <= set("|-: "):
        cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in lines]
        return {"kind": "table", "head": cells[0], "rows": cells[2:]}
    if len(lines) == 1:
        return {"kind": "p", "text": lines[0]}
    return {"kind": "pre", "text": block}


def _matches(pattern: str, tag: str) -> bool:
    """A chart's tag pattern against a tag, as TensorBoard's custom scalars match it; a pattern that is not a valid
    regular expression matches its own text only."""
    try:
        return re.match(pattern, tag) is not None
    except re.error:
        return pattern == tag


def _monitor_view(run: RunLogs, name: str, anchor: str) -> dict[str, Any]:
    prefix = f"probes/{name}/"
    mine = {t: pts for t, pts in run.scalars.items() if t.startswith(prefix) and pts}
    charts = []
    for title, patterns in run.charts.get(f"probes/{name}", {}).items():  # the dashboard's key charts, in its order
        series = {t: pts for t, pts in mine.items() if any(_matches(p, t) for p in patterns)}
        if series:
            charts.append({"alt": title, "src": _data_uri(_chart_png(title, series))})
    if not charts and mine:  # no layout in the logs: one chart of (the first eight of) everything
        charts.append({"alt": name, "src": _data_uri(_chart_png(name, dict(list(mine.items())[:8])))})
    last_probe = max(run.probe_steps(name), default=None)
    texts = []
    for tag, entries in sorted(run.texts.items()):
        if tag.startswith(prefix) and tag != prefix + "failures":
            step, text = entries[-1]
            # a text table is written only when it changed: unchanged since, up to the monitor's last probe
            through = last_probe if last_probe is not None and last_probe > step else None
            texts.append({"key": tag[len(prefix):], "step": step, "unchanged_through": through,
                          "blocks": _markdown_blocks(text)})
    failed = mine.get(prefix + "failed_probes")
    failures = run.texts.get(prefix + "failures")
    return {
        "anchor": anchor,
        "title": _section_title(name),
        "charts": charts,
        "rows": [{"key": t[len(prefix):], "step": pts[-1][0], "value": f"{pts[-1][1]:.4g}", "count": len(pts)}
                 for t, pts in sorted(mine.items())],
        "failed": int(failed[-1][1]) if failed else 0,
        "failures": _markdown_blocks(failures[-1][1]) if failures else
        ([{"kind": "p", "text": "(the messages were not logged: no text in the event files)"}] if failed else []),
        "texts": texts,
        "pictures": [{"alt": t, "src": _data_uri(png), "caption": t[len(prefix):], "step": s}
                     for t, (s, png) in sorted(run.images.items()) if t.startswith(prefix)],
    }


def _run_view(run: RunLogs, index: int, several: bool) -> dict[str, Any]:
    anchor = f"run-{index}"
    monitors = [_monitor_view(run, m, f"{anchor}-{m}" if several else m) for m in run.monitors()]
    others = sorted(t for t in run.scalars if not t.startswith("probes/") and run.scalars[t])
    return {
        "anchor": anchor, "name": run.name or os.path.basename(os.path.abspath(run.logdir)),
        "problems": [d.describe(run.logdir) for d in run.damage], "notes": run.notes, "monitors": monitors,
        "others": [{"key": t, "step": run.scalars[t][-1][0], "value": f"{run.scalars[t][-1][1]:.4g}"} for t in others],
        "settings": sorted(run.settings.items()),
    }


def render_html(runs: RunLogs | list[RunLogs], title: str | None = None, root: str | None = None,
                notes: Sequence[str] = ()) -> str:
    """The report page as one HTML string (pictures embedded): one run, or one section per run with a table of
    contents."""
    import jinja2

    from lightning_probes._report_template import BLOCK, PAGE, STYLE

    runs = [runs] if isinstance(runs, RunLogs) else list(runs)
    several = len(runs) > 1
    views = [_run_view(run, i + 1, several) for i, run in enumerate(runs)]
    root = root or (runs[0].logdir if runs else "")
    if title is None:
        title = (f"lightning-probes report: {os.path.basename(os.path.abspath(root))} ({len(runs)} runs)" if several
                 else f"lightning-probes report: {views[0]['name']}")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    macro = getattr(env.from_string(BLOCK).module, "render_block")  # the template's macro: a dynamic attribute
    return env.from_string(PAGE).render(title=title, style=STYLE, root=root, runs=views, notes=list(notes),
                                        problems=[], render_block=macro)


def write_report(logdir: str, out: str | None = None, quiet: bool = False, run: str | None = None,
                 partial: bool = False) -> str:
    """Read ``logdir`` and write the HTML report (default: ``<logdir>/report.html``); returns its path.

    What could not be read (damaged event files, skipped entries, split writers) is said on stderr and in the page.

    Raises:
        DamagedLogs: an event file could not be read to its end and ``partial`` is False (the page is written all
            the same, saying so).
    """
    progress = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    runs, notes = read_runs(logdir, progress)
    if run is not None:
        runs = _pick(runs, run)
    out = out or os.path.join(logdir, "report.html")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(render_html(runs, root=logdir, notes=notes))
    for note in [*notes, *{n for r in runs for n in r.notes}]:
        print(f"lightning-probes report: note: {note}", file=sys.stderr)
    damage = [d for r in runs for d in r.damage]
    for d in damage:
        print(f"lightning-probes report: {'warning' if partial else 'error'}: damaged event file "
              f"{d.describe(logdir)}", file=sys.stderr)
    if not quiet:
        names = ", ".join(f"{r.name}: {', '.join(r.monitors()) or 'no monitors'}" for r in runs)
        print(f"wrote {out} ({names})", file=sys.stderr)
    if damage and not partial:
        raise DamagedLogs(f"{len(damage)} event file(s) could not be read to their end; {out} says what is missing. "
                          "Pass --partial (partial=True) to accept a partial report.")
    return out

"""``lightning-probes report LOGDIR``: one self-contained HTML page from a finished run's TensorBoard logs.

The event files are read with TensorBoard's own reader. The page has a section per monitor present (key curves
drawn from the dashboard layout, the last value of every scalar, the latest text tables and pictures) and the
run's settings (LightningCLI's ``config.yaml`` and ``hparams.yaml`` found under the log directory). Pictures are
embedded as data URIs, so the file can be mailed as it is.
"""

from __future__ import annotations

import base64
import glob
import html
import io
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RunLogs", "read_run", "render_html", "write_report"]

# sections in the order the dashboard shows them; anything else under probes/ follows in name order
_ORDER = ["spectrum", "condensation", "interactions", "lib", "concepts"]
_TITLES = {
    "spectrum": "Feature-map spectrum (Nam et al. 2024)",
    "condensation": "Condensation (Chen & Luo 2024; Zhou et al. 2022)",
    "interactions": "AND-OR interactions (Cheng et al. 2024)",
    "lib": "Local Interaction Basis (Bushnaq et al. 2024)",
    "concepts": "Clustered compositional explanations (La Rosa et al. 2023)",
}


@dataclass
class RunLogs:
    """Everything a run's event files hold that the report uses."""

    logdir: str
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    texts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    images: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # the latest picture of each tag
    charts: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # category -> chart -> tag regexes
    settings: dict[str, str] = field(default_factory=dict)  # file name -> text

    def monitors(self) -> list[str]:
        names = {tag.split("/")[1] for tag in [*self.scalars, *self.texts, *self.images] if tag.startswith("probes/")}
        return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def read_run(logdir: str, progress: Callable[[str], None] | None = None) -> RunLogs:
    """Read every event file under ``logdir`` (recursively).

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        ValueError: it holds no TensorBoard event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"no such log directory: {logdir!r}")
    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise ValueError(
            f"no TensorBoard event files under {logdir!r}; point at the directory a TensorBoardLogger wrote "
            "(e.g. runs/<name>/version_0)."
        )
    run = RunLogs(logdir)
    total = sum(os.path.getsize(f) for f in files)
    done = 0
    for i, path in enumerate(files, 1):
        if progress:
            progress(f"reading event file {i}/{len(files)} ({done / 2**20:.1f} of {total / 2**20:.1f} MiB): "
                     f"{os.path.relpath(path, logdir)}")
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0, "images": 1})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            run.scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags.get("images", []):
            event = acc.Images(tag)[-1]
            if tag not in run.images or event.step >= run.images[tag][0]:
                run.images[tag] = (event.step, event.encoded_image_string)
        for tag in tags.get("tensors", []):
            for event in acc.Tensors(tag):
                values = event.tensor_proto.string_val
                if not values:
                    continue
                if tag == "custom_scalars__config__":
                    layout = layout_pb2.Layout.FromString(values[0])
                    for category in layout.category:
                        charts = run.charts.setdefault(category.title, {})
                        for chart in category.chart:
                            charts.setdefault(chart.title, list(chart.multiline.tag))
                else:
                    run.texts.setdefault(tag.removesuffix("/text_summary"), []).append((event.step, values[0].decode()))
        done += os.path.getsize(path)
    for series in (*run.scalars.values(), *run.texts.values()):
        series.sort(key=lambda item: item[0])
    for name in ("config.yaml", "hparams.yaml"):
        for path in sorted(glob.glob(os.path.join(logdir, "**", name), recursive=True)):
            run.settings[os.path.relpath(path, logdir)] = open(path, encoding="utf-8").read()
    return run


def _chart_png(title: str, series: dict[str, list[tuple[int, float]]]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.2), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    for tag, points in series.items():
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 60 else None, label=tag.split("/", 2)[-1])
    ax.set(title=title, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _markdown_to_html(text: str) -> str:
    """Blocks separated by blank lines: markdown pipe tables become HTML tables, other blocks paragraphs.

    Example:
        >>> text = "Unit 3 is dead.\\n\\n| a | b |\\n|---|---|\\n| 1 | x \\\\| y |"
        >>> print(_markdown_to_html(text).replace("<t", "\\n<t"))
        <p>Unit 3 is dead.</p>
        <table>
        <thead>
        <tr>
        <th>a</th>
        <th>b</th></tr></thead>
        <tbody>
        <tr>
        <td>1</td>
        <td>x | y</td></tr></tbody></table>
    """
    return "".join(_block_to_html(block) for block in re.split(r"\n\s*\n", text.strip()) if block.strip())


def _block_to_html(block: str) -> str:
    lines = block.strip().splitlines()
    if len(lines) >= 2 and all(line.strip().startswith("|") for line in lines) and set(lines[1]) <= set("|-: "):
        cells = [[html.escape(c.strip().replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]
                 for ln in lines]
        head = "".join(f"<th>{c}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[2:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if len(lines) == 1:
        return f"<p>{html.escape(lines[0])}</p>"
    return f"<pre>{html.escape(block)}</pre>"


def _section(run: RunLogs, name: str) -> str:
    prefix = f"probes/{name}/"
    parts = [f'<section id="{html.escape(name)}"><h2>{html.escape(_TITLES.get(name, name))}</h2>']
    charts = run.charts.get(f"probes/{name}", {})
    figures = []
    for title, patterns in charts.items():  # the dashboard's key charts, in its order
        series = {t: pts for t, pts in run.scalars.items() if t.startswith(prefix) and pts
                  and any(re.fullmatch(p, t) or re.match(p, t) for p in patterns)}
        if series:
            figures.append(_img(_chart_png(title, series), title))
    if not figures:  # no layout in the logs: one chart of everything
        series = {t: pts for t, pts in run.scalars.items() if t.startswith(prefix) and pts}
        if series:
            figures.append(_img(_chart_png(name, dict(list(series.items())[:8])), name))
    parts.append('<div class="figures">' + "".join(figures) + "</div>")
    rows = [(t[len(prefix):], pts[-1][0], pts[-1][1], len(pts)) for t, pts in sorted(run.scalars.items())
            if t.startswith(prefix) and pts]
    if rows:
        body = "".join(f"<tr><td>{html.escape(k)}</td><td>{s}</td><td>{v:.4g}</td><td>{n}</td></tr>"
                       for k, s, v, n in rows)
        parts.append("<h3>Final values</h3><table><thead><tr><th>scalar</th><th>last step</th><th>value</th>"
                     f"<th>probes</th></tr></thead><tbody>{body}</tbody></table>")
    for tag, entries in sorted(run.texts.items()):
        if tag.startswith(prefix):
            step, text = entries[-1]
            parts.append(f"<h3>{html.escape(tag[len(prefix):])} (step {step})</h3>{_markdown_to_html(text)}")
    pictures = [(t, s, png) for t, (s, png) in sorted(run.images.items()) if t.startswith(prefix)]
    if pictures:
        parts.append('<h3>Latest pictures</h3><div class="figures">'
                     + "".join(f"<figure>{_img(png, t)}<figcaption>{html.escape(t[len(prefix):])}, step {s}"
                               f"</figcaption></figure>" for t, s, png in pictures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}
th{background:#f3f3f3}.figures{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:85%}h2{border-bottom:2px solid #ddd}"""


def render_html(run: RunLogs, title: str | None = None) -> str:
    """The report page as one HTML string (pictures embedded)."""
    monitors = run.monitors()
    title = title or f"lightning-probes report: {os.path.basename(os.path.abspath(run.logdir))}"
    nav = " · ".join(f'<a href="#{m}">{html.escape(_TITLES.get(m, m))}</a>' for m in monitors)
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Log directory: <code>{html.escape(run.logdir)}</code></p>"]
    body.append(f"<p>{nav}</p>" if monitors else "<p><b>No lightning-probes monitor logged in this run.</b></p>")
    body += [_section(run, m) for m in monitors]
    others = sorted(t for t in run.scalars if not t.startswith("probes/"))
    if others:
        rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{run.scalars[t][-1][0]}</td>"
                       f"<td>{run.scalars[t][-1][1]:.4g}</td></tr>" for t in others if run.scalars[t])
        body.append("<section><h2>Training metrics</h2><table><thead><tr><th>scalar</th><th>last step</th>"
                    f"<th>value</th></tr></thead><tbody>{rows}</tbody></table></section>")
    body.append("<section><h2>Settings</h2>" + ("".join(
        f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>" for name, text in run.settings.items())
        or "<p>No config.yaml or hparams.yaml was found under the log directory.</p>") + "</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_report(logdir: str, out: str | None = None, quiet: bool = False) -> str:
    """Read ``logdir`` and write the HTML report (default: ``<logdir>/report.html``); returns its path."""
    progress = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    run = read_run(logdir, progress)
    out = out or os.path.join(logdir, "report.html")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(render_html(run))
    if not quiet:
        print(f"wrote {out} ({', '.join(run.monitors()) or 'no monitors'})", file=sys.stderr)
    return out

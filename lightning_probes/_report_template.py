"""The report page's Jinja2 template (a string in a module, so it installs with the package whatever the installer).

Every value reaches the page through ``{{ … }}`` under autoescaping: no string from the logs (folder, tag, monitor,
chart title, text table, settings) is ever pasted into markup by Python. Element ids are generated (``run-1``,
``run-1-spectrum`` …) from escaped names; pictures are ``data:image/png;base64,…`` URIs built from PNG bytes.
"""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style></head>
<body>
<h1>{{ title }}</h1>
<p>Log directory: <code>{{ root }}</code></p>
{%- for problem in problems %}
<p class="problem"><b>Incomplete input:</b> {{ problem }}</p>
{%- endfor %}
{%- for note in notes %}
<p class="note">{{ note }}</p>
{%- endfor %}
{%- if runs|length > 1 %}
<nav><h2>Runs</h2><ul>
{%- for run in runs %}
<li><a href="#{{ run.anchor }}">{{ run.name }}</a></li>
{%- endfor %}
</ul></nav>
{%- endif %}
{%- for run in runs %}
<article id="{{ run.anchor }}">
{%- if runs|length > 1 %}<h2 class="run">Run: {{ run.name }}</h2>{% endif %}
{%- for problem in run.problems %}
<p class="problem"><b>Incomplete input:</b> {{ problem }}</p>
{%- endfor %}
{%- for note in run.notes %}
<p class="note">{{ note }}</p>
{%- endfor %}
{%- if run.monitors %}
<p>{% for m in run.monitors %}<a href="#{{ m.anchor }}">{{ m.title }}</a>
{%- if not loop.last %} · {% endif %}{% endfor %}</p>
{%- else %}
<p><b>No lightning-probes monitor logged in this run.</b></p>
{%- endif %}
{%- for m in run.monitors %}
<section id="{{ m.anchor }}"><h2>{{ m.title }}</h2>
{%- if m.failures %}
<div class="failures"><h3>Failed probes: {{ m.failed }}</h3>
{%- for block in m.failures %}{{ render_block(block) }}{% endfor %}</div>
{%- endif %}
<div class="figures">{% for fig in m.charts %}<img alt="{{ fig.alt }}" src="{{ fig.src }}">{% endfor %}</div>
{%- if m.rows %}
<h3>Final values</h3><table><thead><tr><th>scalar</th><th>last step</th><th>value</th><th>probes</th></tr></thead>
<tbody>
{%- for row in m.rows %}<tr><td>{{ row.key }}</td><td>{{ row.step }}</td><td>{{ row.value }}</td><td>
{{- row.count }}</td></tr>{% endfor %}</tbody></table>
{%- endif %}
{%- for text in m.texts %}
<h3>{{ text.key }} (step {{ text.step }}
{%- if text.unchanged_through %}, unchanged through step {{ text.unchanged_through }}{% endif %})</h3>
{%- for block in text.blocks %}{{ render_block(block) }}{% endfor %}
{%- endfor %}
{%- if m.pictures %}
<h3>Latest pictures</h3><div class="figures">
{%- for pic in m.pictures %}<figure><img alt="{{ pic.alt }}" src="{{ pic.src }}"><figcaption>
{{- pic.caption }}, step {{ pic.step }}</figcaption></figure>{% endfor %}</div>
{%- endif %}
</section>
{%- endfor %}
{%- if run.others %}
<section><h2>Training metrics</h2><table><thead><tr><th>scalar</th><th>last step</th><th>value</th></tr></thead>
<tbody>
{%- for row in run.others %}<tr><td>{{ row.key }}</td><td>{{ row.step }}</td><td>{{ row.value }}</td></tr>
{%- endfor %}</tbody></table></section>
{%- endif %}
<section><h2>Settings</h2>
{%- for name, text in run.settings %}
<h3>{{ name }}</h3><pre>{{ text }}</pre>
{%- else %}
<p>No config.yaml or hparams.yaml was found in the run's directory.</p>
{%- endfor %}
</section>
</article>
{%- endfor %}
</body></html>
"""

# one markdown block of a text table: a table, a paragraph or preformatted lines
BLOCK = """{%- macro render_block(block) -%}
{%- if block.kind == "table" -%}
<table><thead><tr>{% for c in block.head %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{%- for row in block.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{%- elif block.kind == "p" -%}
<p>{{ block.text }}</p>
{%- else -%}
<pre>{{ block.text }}</pre>
{%- endif -%}
{%- endmacro -%}"""

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}
th{background:#f3f3f3}.figures{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:85%}h2{border-bottom:2px solid #ddd}
.problem{background:#fde8e8;border-left:4px solid #c33;padding:4px 8px}.note{color:#555;font-size:90%}
.failures{background:#fff4e5;padding:4px 8px}"""

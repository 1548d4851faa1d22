"""Writing the matrix: ``matrix.md``, ``matrix.csv`` and one self-contained ``matrix.html`` with plots.

Names come from run records anyone can write, so every one is escaped for the format it lands in:
HTML-escaped (and ``|`` escaped) in Markdown, HTML-escaped in the page, prefixed with ``'`` in the CSV
when a spreadsheet would read it as a formula (OWASP), and drawn without mathtext in the plots.
"""

import base64
import csv
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbench.files import read_regular_file  # noqa: E402
from genbench.matrix.runs import Run, Skipped  # noqa: E402
from genbench.matrix.table import RULES, Matrix  # noqa: E402

SKIPPED_TITLE = "Jobs without a usable record"
MAX_IMAGE_BYTES = 16 << 20  # a samples.png is tens of KB


def _md(text: object) -> str:
    """``text`` safe inside a Markdown table or list: no HTML, no column breaks, one line."""
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def _cell(label: str, text: str) -> str:
    return f"**{_md(label)}** ({_md(text)})" if label else _md(text)


def _not_finished(run: Run) -> str:
    return f"{run.family} seed {run.seed}: {run.status}: {run.error} ({run.path})"


def _skipped(job: Skipped) -> str:
    return f"{job.path}: {job.reason}"


def to_markdown(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    parts = []
    for m in matrices:
        seeds = sorted({r.seed for r in m.runs})
        parts.append(f"## {_md(m.dataset)}\n\n{len(m.runs)} runs, seeds {seeds}; mean ± std over seeds.\n")
        parts.append("| Property (metric) | " + " | ".join(map(_md, m.families)) + " |")
        parts.append("| --- |" + " --- |" * len(m.families))
        for row in m.rows:
            cells = [_cell(row.cells[f].label, row.cells[f].text) for f in m.families]
            parts.append(f"| {_md(row.name)} ({_md(row.metric)}) | " + " | ".join(cells) + " |")
        failures = [r for r in m.runs if not r.ok]
        if failures:
            parts.append("\nRuns that did not finish:\n")
            parts += [f"- {_md(_not_finished(r))}" for r in failures]
        parts.append("")
    if skipped:
        parts.append(f"## {SKIPPED_TITLE}\n")
        parts += [f"- {_md(_skipped(job))}" for job in skipped]
        parts.append("")
    parts.append("### How the words are derived\n\n" + RULES + "\n")
    return "\n".join(parts)


COLUMNS = ["dataset", "property", "metric", "family", "label", "mean", "std", "n", "text"]


def matrix_rows(matrices: list[Matrix]) -> list[list]:
    """One row per dataset x property x family, in :data:`COLUMNS` order (the CSV and the W&B table)."""
    return [[m.dataset, row.name, row.metric, f, row.cells[f].label, row.cells[f].mean, row.cells[f].std,
             row.cells[f].n, row.cells[f].text] for m in matrices for row in m.rows for f in m.families]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(matrices: list[Matrix], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([_csv_cell(v) for v in row] for row in matrix_rows(matrices))


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _speed_vs_quality(m: Matrix) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for family in m.families:
        points = [(r.metrics["sample_ms_per_sample"], r.metrics[m.quality]) for r in m.runs
                  if r.ok and r.family == family and {m.quality, "sample_ms_per_sample"} <= r.metrics.keys()]
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], label=family)
    ax.set_xscale("log")
    ax.set_xlabel("sampling time, ms per sample (log)")
    ax.set_ylabel(m.rows[0].metric)
    ax.set_title(f"{m.dataset}: speed vs quality, one point per seed")
    ax.legend(fontsize=8)
    return _png(fig)


def _curves(m: Matrix) -> str:
    fig, axes = plt.subplots(1, len(m.families), figsize=(3.2 * len(m.families), 2.6), squeeze=False)
    for ax, family in zip(axes[0], m.families, strict=True):
        for run in sorted((r for r in m.runs if r.family == family), key=lambda r: r.seed):
            curve = [(s, v) for s, v in run.loss_curve() if math.isfinite(v)]
            if curve:
                ax.plot([s for s, _ in curve], [v for _, v in curve], label=f"seed {run.seed}", lw=1)
        ax.set_title(family)
        ax.set_xlabel("step")
        if ax.get_lines():  # a family whose runs logged no curve gets an empty panel, no legend
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train/loss")
    return _png(fig)


def _image(path: Path | None) -> str:
    try:
        data = read_regular_file(path, MAX_IMAGE_BYTES) if path else None
    except (OSError, ValueError) as e:
        return f"<p>unreadable samples.png ({html.escape(str(e))})</p>"
    if data is None:
        return "<p>no samples.png</p>"
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" width="260">'


def _html_list(title: str, items: list[str]) -> str:
    return f"<h3>{title}</h3><ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def to_html(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    with plt.rc_context({"text.parse_math": False}):  # a name like $\\evil$ is text, not mathtext
        return _page(matrices, skipped)


def _page(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    body = ["<h1>genbench comparison matrix</h1>"]
    for m in matrices:
        body.append(f"<h2>{html.escape(m.dataset)}</h2><table><tr><th>Property (metric)</th>"
                    + "".join(f"<th>{html.escape(f)}</th>" for f in m.families) + "</tr>")
        for row in m.rows:
            cells = "".join(f"<td><b>{html.escape(row.cells[f].label)}</b><br><small>"
                            f"{html.escape(row.cells[f].text)}</small></td>" for f in m.families)
            body.append(f"<tr><th>{html.escape(row.name)}<br><small>{html.escape(row.metric)}</small></th>"
                        f"{cells}</tr>")
        body.append("</table>")
        failures = [_not_finished(r) for r in m.runs if not r.ok]
        if failures:
            body.append(_html_list("Runs that did not finish", failures))
        body.append("<h3>Samples (lowest seed of each family)</h3><div class='grid'>")
        for family in m.families:
            ok = sorted((r for r in m.runs if r.family == family and r.ok), key=lambda r: r.seed)
            body.append(f"<figure>{_image(ok[0].samples_png() if ok else None)}"
                        f"<figcaption>{html.escape(family)}</figcaption></figure>")
        body.append(f"</div><h3>Speed vs quality</h3><img src='{_speed_vs_quality(m)}'>")
        body.append(f"<h3>Training curves</h3><img src='{_curves(m)}'>")
    if skipped:
        body.append(_html_list(SKIPPED_TITLE, [_skipped(job) for job in skipped]))
    body.append(f"<h2>How the words are derived</h2><pre>{html.escape(RULES)}</pre>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
             ".grid{display:flex;flex-wrap:wrap;gap:8px}pre{white-space:pre-wrap}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>genbench matrix</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_all(matrices: list[Matrix], skipped: list[Skipped], out_dir: Path) -> list[Path]:
    """Write matrix.md, matrix.csv and matrix.html into ``out_dir`` (``skipped`` jobs are named in the md
    and html); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path, page = out_dir / "matrix.md", out_dir / "matrix.csv", out_dir / "matrix.html"
    md.write_text(to_markdown(matrices, skipped))
    write_csv(matrices, csv_path)
    page.write_text(to_html(matrices, skipped))
    return [md, csv_path, page]

"""Writing the matrix: ``matrix.md``, ``matrix.csv`` and one self-contained ``matrix.html`` with plots."""

import base64
import csv
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genbench.matrix.table import RULES, Matrix  # noqa: E402


def _cell(label: str, text: str) -> str:
    return f"**{label}** ({text})" if label else text


def to_markdown(matrices: list[Matrix]) -> str:
    parts = []
    for m in matrices:
        seeds = sorted({r.seed for r in m.runs})
        parts.append(f"## {m.dataset}\n\n{len(m.runs)} runs, seeds {seeds}; mean ± std over seeds.\n")
        parts.append("| Property (metric) | " + " | ".join(m.families) + " |")
        parts.append("| --- |" + " --- |" * len(m.families))
        for row in m.rows:
            cells = [_cell(row.cells[f].label, row.cells[f].text).replace("|", "\\|") for f in m.families]
            parts.append(f"| {row.name} ({row.metric}) | " + " | ".join(cells) + " |")
        failures = [r for r in m.runs if not r.ok]
        if failures:
            parts.append("\nRuns that did not finish:\n")
            parts += [f"- {r.family} seed {r.seed}: {r.status}: {r.error} ({r.path})" for r in failures]
        parts.append("")
    parts.append("### How the words are derived\n\n" + RULES + "\n")
    return "\n".join(parts)


COLUMNS = ["dataset", "property", "metric", "family", "label", "mean", "std", "n", "text"]


def matrix_rows(matrices: list[Matrix]) -> list[list]:
    """One row per dataset x property x family, in :data:`COLUMNS` order (the CSV and the W&B table)."""
    return [[m.dataset, row.name, row.metric, f, row.cells[f].label, row.cells[f].mean, row.cells[f].std,
             row.cells[f].n, row.cells[f].text] for m in matrices for row in m.rows for f in m.families]


def write_csv(matrices: list[Matrix], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(matrix_rows(matrices))


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
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train/loss")
    return _png(fig)


def _image(path: Path | None) -> str:
    if path is None:
        return "<p>no samples.png</p>"
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" width="260">'


def to_html(matrices: list[Matrix]) -> str:
    body = ["<h1>genbench comparison matrix</h1>"]
    for m in matrices:
        body.append(f"<h2>{html.escape(m.dataset)}</h2><table><tr><th>Property (metric)</th>"
                    + "".join(f"<th>{html.escape(f)}</th>" for f in m.families) + "</tr>")
        for row in m.rows:
            cells = "".join(f"<td><b>{html.escape(row.cells[f].label)}</b><br><small>"
                            f"{html.escape(row.cells[f].text)}</small></td>" for f in m.families)
            body.append(f"<tr><th>{html.escape(row.name)}<br><small>{html.escape(row.metric)}</small></th>"
                        f"{cells}</tr>")
        body.append("</table><h3>Samples (lowest seed of each family)</h3><div class='grid'>")
        for family in m.families:
            ok = sorted((r for r in m.runs if r.family == family and r.ok), key=lambda r: r.seed)
            body.append(f"<figure>{_image(ok[0].samples_png() if ok else None)}"
                        f"<figcaption>{html.escape(family)}</figcaption></figure>")
        body.append(f"</div><h3>Speed vs quality</h3><img src='{_speed_vs_quality(m)}'>")
        body.append(f"<h3>Training curves</h3><img src='{_curves(m)}'>")
    body.append(f"<h2>How the words are derived</h2><pre>{html.escape(RULES)}</pre>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
             ".grid{display:flex;flex-wrap:wrap;gap:8px}pre{white-space:pre-wrap}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>genbench matrix</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_all(matrices: list[Matrix], out_dir: Path) -> list[Path]:
    """Write matrix.md, matrix.csv and matrix.html into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path, page = out_dir / "matrix.md", out_dir / "matrix.csv", out_dir / "matrix.html"
    md.write_text(to_markdown(matrices))
    write_csv(matrices, csv_path)
    page.write_text(to_html(matrices))
    return [md, csv_path, page]

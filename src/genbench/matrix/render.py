"""Writing the matrix: ``matrix.md``, ``matrix.csv`` and one self-contained ``matrix.html`` with plots.

Each dataset gets its context (budget, seeds, commit, dates, versions, device, threads), any warning
(configs not pooled), the table with held-out real data as the reference column, quality against
compute, the bottom line with the Pareto front, and the founding comparison marked cell by cell.

Names come from run records anyone can write, so every one is escaped for the format it lands in:
HTML-escaped and backslash-escaped (links, images, code, emphasis, ``|``) in Markdown, HTML-escaped in
the page, prefixed with ``'`` in the CSV when a spreadsheet would read it as a formula (OWASP), and drawn
without mathtext in the plots.
"""

import base64
import csv
import html
import re
from pathlib import Path

import matplotlib.pyplot as plt

from genbench.files import read_regular_file
from genbench.matrix import plots
from genbench.matrix.context import context
from genbench.matrix.founding import TABLE, compare
from genbench.matrix.rules import FOUNDING_FAMILIES, rules_text
from genbench.matrix.runs import Run, Skipped
from genbench.matrix.table import REFERENCE, Matrix, number
from genbench.matrix.verdicts import bottom_line, pareto_front

SKIPPED_TITLE = "Jobs without a usable record"
MAX_IMAGE_BYTES = 16 << 20  # a samples.png is tens of KB
MARKS = {"agrees": "agrees", "disagrees": "DISAGREES", "not measured": "not measured", "mixed": "mixed"}


MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in "\\[]`*~|"})  # links, images, code, emphasis, columns
EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # _x_ is emphasis, fid_inception not
MARKER_START = re.compile(r"^([#+-])(?=[\s#+-]|$)")  # "- x", "# x", "---" start a block; -0.5 and +3 do not
ORDERED_START = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")  # "1. x", "1) x": an ordered list
# GitHub links bare URLs (any "scheme://", "www."); an escaped character inside them stops it (cmark-gfm)
BARE_URL = re.compile(r"(?<=[A-Za-z0-9])(:)(?=//)|(?<![0-9A-Za-z])(www)(\.)", re.IGNORECASE)


def _md(text: object) -> str:
    """``text`` safe inside a Markdown table or list: no HTML, no links or images (a record's
    ``![x](https://...)`` would fetch a remote picture), no code, emphasis or heading, no column breaks,
    one line. A bare URL stays text (an e-mail address still becomes a mailto link on GitHub)."""
    escaped = html.escape(" ".join(str(text).split()), quote=False).translate(MARKDOWN_ESCAPES)
    escaped = BARE_URL.sub(lambda m: "\\:" if m[1] else m[2] + "\\.", escaped)
    escaped = MARKER_START.sub(r"\\\1", EDGE_UNDERSCORE.sub(r"\\_", escaped))
    return ORDERED_START.sub(r"\1\\\2", escaped)


def _cell(label: str, text: str) -> str:
    return f"**{_md(label)}** ({_md(text)})" if label else _md(text)


def _not_finished(run: Run) -> str:
    seed = "with no integer seed" if run.seed is None else f"seed {run.seed}"
    return f"{run.family} {seed}: {run.status}: {run.error} ({run.path})"


def _skipped(job: Skipped) -> str:
    return f"{job.path}: {job.reason}"


def compute_table(m: Matrix) -> tuple[str, list[str], list[list[str]]]:
    """(caption, header, rows) of the quality-against-compute summary, the same in md and html."""
    s = m.curves
    spread = ", {} to {} over the runs".format(*map(number, s.floor_range)) if s.floor_range else ""
    floor = f"; held-out real data {number(s.floor)}{spread}" if s.floor is not None else ""
    at_floor = s.floor is not None and s.level == s.floor
    why = ("held-out real data's: the columns' median best value is below it, where the metric cannot tell "
           "samples from real data" if at_floor else "the median of the columns' best values")
    caption = f"{s.metric} from curves.csv (lower is better{floor}); common level {number(s.level)} ({why})"
    header = ["Column", "at the budget", "best (at FLOPs)", f"FLOPs to reach {number(s.level)}", "by the end"]
    rows = []
    for name, curve in s.curves.items():
        best, at = s.best[name]
        reach = s.to_level[name]
        rows.append([f"{name} (n={curve.seeds})", number(curve.mean[-1]), f"{number(best)} ({number(at)})",
                     number(reach) if reach is not None else "not reached",
                     s.trend[name] or "too short to tell"])
    return caption, header, rows


def founding_table(m: Matrix) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the founding word, the measured word(s) and the verdict of every cell."""
    by_cell = {(c.prop, c.family): c for c in compare(m)}
    rows = []
    for prop in TABLE:
        row = [prop]
        for family in FOUNDING_FAMILIES:
            c = by_cell[prop, family]
            measured = " / ".join(word or "—" for _, word in c.measured) or "—"
            row.append(f"{c.founding} → {measured}: {MARKS[c.verdict]}")
        rows.append(row)
    return ["Property", *FOUNDING_FAMILIES], rows


def _bottom_rows(m: Matrix) -> list[list[str]]:
    return [[v.need, v.pick, v.why] for v in bottom_line(m)]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(map(_md, header)) + " |", "|" + " --- |" * len(header)]
            + ["| " + " | ".join(map(_md, row)) + " |" for row in rows])


def _table_cells(m: Matrix) -> tuple[list[str], list[tuple[str, str, list[tuple[str, str]]]]]:
    """Header and, per row, its name, metric and (label, text) cells, the reference column last when any."""
    with_reference = any(row.reference for row in m.rows)
    header = ["Property (metric)", *m.families] + ([REFERENCE] if with_reference else [])
    rows = []
    for row in m.rows:
        cells = [(row.cells[f].label, row.cells[f].text) for f in m.families]
        if with_reference:
            cells.append(("", row.reference.text) if row.reference else ("", "—"))
        rows.append((row.name, row.metric, cells))
    return header, rows


def to_markdown(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    parts = []
    for m in matrices:
        parts.append(f"## {_md(m.dataset)}\n")
        parts += [f"- {_md(what)}: {_md(value)}" for what, value in context(m)]
        parts += [f"\n**Warning:** {_md(w)}" for w in m.warnings]
        parts.append("\n### Bottom line: which family for my job\n")
        parts += _md_table(["Need", "Pick", "Why"], _bottom_rows(m))
        front = ", ".join(pareto_front(m)) or "none"
        parts.append(f"\nSpeed-quality Pareto front (fastest first): {_md(front)}")
        parts.append("\n### The matrix\n")
        header, rows = _table_cells(m)
        parts.append("| " + " | ".join(map(_md, header)) + " |")
        parts.append("|" + " --- |" * len(header))
        parts += [f"| {_md(name)} ({_md(metric)}) | " + " | ".join(_cell(lb, tx) for lb, tx in cells) + " |"
                  for name, metric, cells in rows]
        if m.curves.curves:
            caption, header, rows = compute_table(m)
            parts.append(f"\n### Quality against training compute\n\n{_md(caption)}\n")
            parts += _md_table(header, rows)
        parts.append("\n### The founding comparison against these measurements\n")
        parts += _md_table(*founding_table(m))
        failures = [r for r in m.runs if not r.ok]
        if failures:
            parts.append("\nRuns that did not finish:\n")
            parts += [f"- {_md(_not_finished(r))}" for r in failures]
        parts.append("")
    if skipped:
        parts.append(f"## {SKIPPED_TITLE}\n")
        parts += [f"- {_md(_skipped(job))}" for job in skipped]
        parts.append("")
    prose = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", rules_text())  # only what reads as a tag: real_<metric>
    parts.append("### How the words are derived\n\n" + prose + "\n")
    return "\n".join(parts)


COLUMNS = ["dataset", "property", "metric", "family", "label", "mean", "std", "n", "text"]


def matrix_rows(matrices: list[Matrix]) -> list[list]:
    """One row per dataset x property x column (and the reference, where the row has one), in
    :data:`COLUMNS` order (the CSV and the W&B table)."""
    out = []
    for m in matrices:
        for row in m.rows:
            cells = [(f, row.cells[f]) for f in m.families]
            cells += [(REFERENCE, row.reference)] if row.reference else []
            out += [[m.dataset, row.name, row.metric, f, c.label, c.mean, c.std, c.n, c.text]
                    for f, c in cells]
    return out


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(matrices: list[Matrix], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([_csv_cell(v) for v in row] for row in matrix_rows(matrices))


def _image(path: Path | None, what: str) -> str:
    try:
        data = read_regular_file(path, MAX_IMAGE_BYTES) if path else None
    except (OSError, ValueError) as e:
        return f"<p>unreadable {what} ({html.escape(str(e))})</p>"
    if data is None:
        return f"<p>no {what}</p>"
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{what}">'


def _html_list(title: str, items: list[str]) -> str:
    return f"<h3>{title}</h3><ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table class='{cls}'><tr>{head}</tr>{body}</table></div>"


def to_html(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    with plt.rc_context({"text.parse_math": False}):  # a name like $\\evil$ is text, not mathtext
        return _page(matrices, skipped)


def _founding_html(m: Matrix) -> str:
    header, rows = founding_table(m)
    verdicts = {(c.prop, c.family): c.verdict for c in compare(m)}
    body = "".join(
        f"<tr><th>{html.escape(row[0])}</th>" + "".join(
            f"<td class='{verdicts[row[0], fam].replace(' ', '-')}'>{html.escape(cell)}</td>"
            for fam, cell in zip(FOUNDING_FAMILIES, row[1:], strict=True)) + "</tr>" for row in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def _dataset_html(m: Matrix) -> list[str]:
    body = [f"<h2>{html.escape(m.dataset)}</h2><dl class='context'>"]
    body += [f"<dt>{html.escape(what)}</dt><dd>{html.escape(value)}</dd>" for what, value in context(m)]
    body.append("</dl>")
    body += [f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in m.warnings]
    body.append("<h3>Bottom line: which family for my job</h3>")
    body.append(_html_table(["Need", "Pick", "Why"], _bottom_rows(m)))
    body.append(f"<p>Speed-quality Pareto front (fastest first): "
                f"<b>{html.escape(', '.join(pareto_front(m)) or 'none')}</b></p>")
    body.append("<h3>The matrix</h3>")
    header, rows = _table_cells(m)
    body.append("<div class='scroll'><table class='matrix'><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for name, metric, cells in rows:
        body.append(f"<tr><th>{html.escape(name)}<br><small>{html.escape(metric)}</small></th>"
                    + "".join(f"<td><b>{html.escape(label)}</b><br><small>{html.escape(text)}</small></td>"
                              for label, text in cells) + "</tr>")
    body.append("</table></div>")
    body.append("<div class='plots'>")
    for picture, alt in ((plots.speed_vs_quality(m), "speed vs quality"),
                         (plots.quality_vs_compute(m), "quality against compute")):
        if picture:  # None: nothing measured to plot
            body.append(f"<img src='{picture}' alt='{alt}'>")
    body.append("</div>")
    if m.curves.curves:
        caption, header, rows = compute_table(m)
        body.append(f"<h3>Quality against training compute</h3><p>{html.escape(caption)}</p>")
        body.append(_html_table(header, rows))
    nfe_plot = plots.nfe_curves(m)
    if nfe_plot:
        body.append("<h3>Quality against sampling cost (NFE)</h3><p>From scripts/nfe_sweep.py on each "
                    "column's checkpoint: every sampler at each NFE budget, lower is better, dashed: real "
                    f"data.</p><img src='{nfe_plot}' alt='quality against NFE'>")
    body.append("<h3>The founding comparison against these measurements</h3>" + _founding_html(m))
    failures = [_not_finished(r) for r in m.runs if not r.ok]
    if failures:
        body.append(_html_list("Runs that did not finish", failures))
    body.append("<h3>Samples (lowest seed of each column) beside held-out real data</h3><div class='grid'>")
    shown = [(c.name, sorted(c.ok, key=lambda r: r.seed)) for c in m.columns]
    real = next((r.real_samples_png() for _, ok in shown for r in ok if r.real_samples_png()), None)
    body.append(f"<figure>{_image(real, 'real_samples.png')}<figcaption>{REFERENCE}</figcaption></figure>")
    for name, ok in shown:
        body.append(f"<figure>{_image(ok[0].samples_png() if ok else None, 'samples.png')}"
                    f"<figcaption>{html.escape(name)}</figcaption></figure>")
    body.append(f"</div><h3>Training curves</h3><img class='wide' src='{plots.training_losses(m)}' "
                "alt='training losses'>")
    return body


STYLE = ("body{font-family:sans-serif;margin:1em auto;max-width:1400px;padding:0 1em;font-size:14px}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;"
         "text-align:left}.scroll{overflow-x:auto;max-width:100%}"
         "dl.context{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}"
         "dt{font-weight:bold}dd{margin:0}.warning{background:#fff3cd;padding:4px 8px}"
         ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}"
         ".grid img{width:100%}figure{margin:0}.plots{display:flex;flex-wrap:wrap;gap:8px}"
         ".plots img{max-width:100%;width:640px}img.wide{max-width:100%}"
         ".agrees{background:#e6f4e6}.disagrees{background:#fbe3e3}.mixed{background:#fff3cd}"
         "pre{white-space:pre-wrap}")


def _page(matrices: list[Matrix], skipped: list[Skipped]) -> str:
    body = ["<h1>genbench comparison matrix</h1>"]
    for m in matrices:
        body += _dataset_html(m)
    if skipped:
        body.append(_html_list(SKIPPED_TITLE, [_skipped(job) for job in skipped]))
    body.append(f"<h2>How the words are derived</h2><pre>{html.escape(rules_text())}</pre>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>genbench matrix</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_all(matrices: list[Matrix], skipped: list[Skipped], out_dir: Path) -> list[Path]:
    """Write matrix.md, matrix.csv and matrix.html into ``out_dir`` (``skipped`` jobs are named in the md
    and html); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path, page = out_dir / "matrix.md", out_dir / "matrix.csv", out_dir / "matrix.html"
    md.write_text(to_markdown(matrices, skipped))
    write_csv(matrices, csv_path)
    page.write_text(to_html(matrices, skipped))
    return [md, csv_path, page]

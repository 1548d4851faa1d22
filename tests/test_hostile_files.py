"""Hostile files and an unlucky network (issue 14): records the aggregation must skip, names that must be
escaped in every format, racing writers, a gzip bomb, a server that never answers."""

import csv
import gzip
import json
import logging
import os
import socket
import threading
import tracemalloc
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from genbench.data.formats import download_mnist_like, read_idx
from genbench.errors import DatasetError, FeatureExtractorUnavailable
from genbench.matrix import write_matrix
from genbench.matrix.runs import Run
from genbench.results import provenance, read_record, write_record


def _finishes_within(seconds: float, fn, *args):
    """Run ``fn(*args)`` in a thread; fail (instead of hanging the suite) if it has not returned in time."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _record(run_dir: Path, family: str = "vae", dataset: str = "moons", error: str | None = None,
            status: str = "ok", **metrics) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_record(run_dir / "metrics.json", status=status, family=family, dataset=dataset, seed=0,
                 metrics={"precision_data_space": 0.5, "sample_ms_per_sample": 0.01, **metrics},
                 provenance=provenance({}, 0, datetime.now()), error=error,
                 capabilities={"latent_space": "=cmd|' /C calc'!A0", "has_latent": True})


def _raw(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(text)


GOOD = {"schema": 2, "status": "ok", "family": "vae", "dataset": "moons", "seed": 0, "metrics": {}}


def test_aggregation_skips_each_bad_record_naming_it_and_escapes_every_name(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    bad = {"list_metrics": json.dumps({**GOOD, "metrics": [1, 2]}),
           "numeric_family": json.dumps({**GOOD, "family": 7}),
           "future_schema": json.dumps({**GOOD, "schema": 3}),
           "bool_seed": json.dumps({**GOOD, "seed": True}),
           "nested": "[" * 100_000 + "]" * 100_000,  # RecursionError in json
           "huge": json.dumps({**GOOD, "error": "x" * (5 << 20)})}  # over the 4 MB a record may hold
    for name, text in bad.items():
        _raw(sweep / name, text)
    (sweep / "fifo").mkdir()
    os.mkfifo(sweep / "fifo" / "metrics.json")  # reading it would wait forever for a writer
    _record(sweep / "evil", family="$\\evil$ <script>alert(1)</script> | x")
    _record(sweep / "link", family="![x](https://evil.example/p.png) [click](https://evil.example) **b** `c`")
    _record(sweep / "heading", family="# _big_ ~~gone~~", status="failed", error="boom")
    _record(sweep / "formula", family='=HYPERLINK("http://evil","click")', status="failed",
            error="<img src=x onerror=alert(1)>")
    _record(sweep / "curve")
    (sweep / "curve" / "csv").mkdir()
    (sweep / "curve" / "csv" / "metrics.csv").write_text("step,train/loss\n0,2.0\n12x,1.5\n20,1.0\n")

    with caplog.at_level(logging.WARNING):
        _, found, paths = _finishes_within(60, write_matrix, [sweep], tmp_path / "out")
    assert sorted(r.path.name for r in found.runs) == ["curve", "evil", "formula", "heading", "link"]
    assert sorted(s.path.name for s in found.skipped) == sorted([*bad, "fifo"])
    for name in [*bad, "fifo"]:
        assert f"skipping run {sweep / name}: unusable metrics.json" in caplog.text
    assert "not a regular file" in caplog.text and "nested too deeply" in caplog.text
    assert "more than the 4194304 allowed" in caplog.text
    assert Run(sweep / "curve", "vae", "moons", 0, "ok").loss_curve() == [(0, 2.0), (20, 1.0)]

    md, table, page = (p.read_text() for p in paths)  # matrix.md, .csv, .html: all written
    assert "<script>" not in md and "&lt;script&gt;" in md and "<img" not in md
    assert "$\\\\evil$ &lt;script&gt;alert(1)&lt;/script&gt; \\| x" in md  # a name cannot split a column
    # No link, image, emphasis or code from a name: every bracket, star and backtick escaped
    assert ("!\\[x\\](https\\://evil.example/p.png) \\[click\\](https\\://evil.example) \\*\\*b\\*\\* "
            "\\`c\\`") in md
    assert "![x](" not in md and "[click](" not in md
    assert "- \\# \\_big\\_ \\~\\~gone\\~\\~ seed 0: failed: boom" in md  # no heading, no emphasis
    assert "<script>" not in page and "<img src=x" not in page and "&lt;img src=x" in page
    cells = [cell for row in csv.reader(table.splitlines()) for cell in row]
    assert "'=HYPERLINK(\"http://evil\",\"click\")" in cells
    assert not any(cell.startswith(("=", "+", "@")) for cell in cells)


def test_records_written_by_racing_writers_are_always_whole(tmp_path):
    """A fixed temporary name (metrics.json.tmp) let writers clobber each other: readers saw half files."""
    path = tmp_path / "metrics.json"
    metrics = {f"metric_{i}": float(i) for i in range(2000)}  # a record of ~60 KB: writes take a while
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            for _ in range(40):
                write_record(path, status="ok", family="vae", dataset="moons", seed=seed, metrics=metrics,
                             provenance={})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads) or reads == 0:
        if path.exists():
            assert len(read_record(path)["metrics"]) == 2000  # raises on half a file
            reads += 1
    for t in threads:
        t.join()
    assert not errors and reads > 0
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_a_gzip_bomb_is_refused_after_the_declared_size(tmp_path):
    """A small gzip whose IDX header declares 10 labels but which inflates to 32 MiB."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big"))
        f.write(bytes(32 << 20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="has extra bytes: header says 10 = 10 bytes"):
            read_idx(path, ndim=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the whole payload was never held (reading it whole: over 32 MiB)
    plain = tmp_path / "labels"  # an honest file still reads
    plain.write_bytes(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert read_idx(plain).tolist() == [1, 2, 3]


@pytest.fixture
def stalled_server():
    """A server that accepts connections and never answers (the kernel completes the handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    server.close()


def test_dataset_download_from_a_stalled_server_times_out_with_a_clear_error(tmp_path, stalled_server,
                                                                              monkeypatch):
    monkeypatch.setattr("genbench.download.TIMEOUT_S", 0.5)
    with pytest.raises(DatasetError, match=r"(?s)could not download t10k-labels-idx1-ubyte\.gz.*"
                                           r"no answer within 0\.5 s \(timed out\).*Check the network"):
        _finishes_within(30, download_mnist_like, tmp_path / "raw", [("t10k-labels-idx1-ubyte.gz", "0" * 32)],
                         [stalled_server])
    assert list((tmp_path / "raw").iterdir()) == []  # no partial file under any name


def test_inception_download_from_a_stalled_server_makes_its_metrics_unavailable(tmp_path, stalled_server,
                                                                                monkeypatch):
    from genbench.evaluation import inception

    monkeypatch.setattr("genbench.download.TIMEOUT_S", 0.5)
    monkeypatch.setattr(inception, "WEIGHTS_URL", stalled_server + inception.WEIGHTS_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FeatureExtractorUnavailable, match=r"download failed .*timed out.*inception_weights"):
        _finishes_within(30, inception.find_weights, None, True)
    assert not inception.cached_weights_path().exists()


def test_an_idx_header_declaring_more_than_the_file_holds_is_truncated(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as f:  # declares 2^32-1 x 2^32-1 x 1 bytes, holds 5
        f.write(bytes([0, 0, 0x08, 3]) + (2**32 - 1).to_bytes(4, "big") * 2 + (1).to_bytes(4, "big"))
        f.write(np.arange(5, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match="truncated: header says .* file holds 5"):
        read_idx(path)


def test_markdown_escaping_stops_blocks_but_leaves_numbers_and_metric_names_readable():
    from genbench.matrix.render import _md

    for text, shown in [("- x", "\\- x"), ("# x", "\\# x"), ("1. x", "1\\. x"), ("2) x", "2\\) x"),
                        ("_x_", "\\_x\\_"), ("-0.412 bits/dim", "-0.412 bits/dim"), ("+3", "+3"),
                        ("fid_inception 1.2", "fid_inception 1.2"), ("r <= 1.1", "r &lt;= 1.1"),
                        # bare URLs, which GitHub would link: as cmark-gfm 0.29 renders them, plain text
                        ("see https://evil.example/x", "see https\\://evil.example/x"),
                        ("(WWW.evil.example)", "(WWW\\.evil.example)"), ("a:/b", "a:/b"),
                        ("dataset.root=/x/www.y", "dataset.root=/x/www\\.y"), ("awww.b", "awww.b")]:
        assert _md(text) == shown, (text, _md(text))


def test_a_torch_file_written_on_a_full_disk_raises_an_os_error_naming_it_and_leaves_nothing(tmp_path,
                                                                                             monkeypatch):
    """torch's own writer turns ENOSPC into a RuntimeError naming neither the cause nor the file
    (``torch.save(x, "/dev/full")``: "unexpected pos 704 vs 598"); genbench's saves go through a Python file,
    so the machine's error, with the file's name, reaches the handlers of machine errors."""
    import errno

    import genbench.files
    from genbench.files import save_atomically
    from tests.faults import FullDisk

    monkeypatch.setattr(genbench.files, "open", FullDisk.opened, raising=False)
    target = tmp_path / "weights.pt"
    with pytest.raises(OSError) as raised:
        save_atomically({"x": torch.zeros(4096)}, target)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary one
    monkeypatch.undo()
    save_atomically({"x": torch.arange(3.0)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.arange(3.0))

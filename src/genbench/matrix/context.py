"""What a matrix was measured under, from its runs' records: budget, seeds, commit, dates, library
versions, device and threads, host. Several values are all listed: a reader must see a mixed sweep."""

from genbench.matrix.table import Matrix, budget_of

VERSIONS = ("torch", "pytorch-lightning", "python")


def _listed(values: set) -> str:
    shown = sorted(str(v) for v in values if v is not None)
    return ", ".join(shown) if shown else "not recorded"


def _device(metrics: dict, stage: str) -> str | None:
    """``NVIDIA H200 (cuda:0)``: the hardware and the device of a stage; the device alone in a record that
    predates the name; None where the stage did not run (an evaluation of a checkpoint did not train)."""
    device, name = metrics.get(f"{stage}_device"), metrics.get(f"{stage}_device_name")
    return f"{name} ({device})" if device and name else device


def context(m: Matrix) -> list[tuple[str, str]]:
    """(what, value) pairs in reading order."""
    provs = [r.provenance for r in m.runs]
    metrics = [r.metrics for r in m.runs if r.ok]
    budgets = {}
    for column in m.columns:
        budgets.setdefault(budget_of(column), []).append(column.name)
    budget = "; ".join(f"{steps} ({', '.join(names)})" if len(budgets) > 1 else str(steps)
                       for steps, names in budgets.items())
    started = sorted(str(p["started_at"]) for p in provs if p.get("started_at"))
    versions = {f"{name} {p.get('versions', {}).get(name)}" for p in provs for name in VERSIONS
                if isinstance(p.get("versions"), dict) and p["versions"].get(name)}
    return [
        ("Budget (trainer.max_steps)", budget),
        ("Runs", f"{len(m.runs)} ({sum(r.ok for r in m.runs)} ok), seeds "
                 f"{_listed({r.seed for r in m.runs})}"),
        ("Commit", _listed({p.get("git_commit") for p in provs})),
        ("Started", f"{started[0]} to {started[-1]}" if started else "not recorded"),
        ("Versions", _listed(versions)),
        ("Training device", _listed({_device(x, "train") for x in metrics})),
        ("Sampling device", _listed({_device(x, "sample") for x in metrics})),
        ("Torch threads (training; sampling)",
         f"{_listed({x.get('train_torch_threads') for x in metrics})}; "
         f"{_listed({x.get('sample_torch_threads') for x in metrics})}"),
        ("Host", _listed({p.get("host") for p in provs})),
    ]

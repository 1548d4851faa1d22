"""The matrix as a W&B table, logged by the multirun callback into the sweep's W&B group."""

from pathlib import Path

from genbench.loggers import wandb_offline
from genbench.matrix.render import COLUMNS, matrix_rows
from genbench.matrix.table import Matrix


def log_matrix_table(matrices: list[Matrix], sweep_dir: Path, project: str, mode: str = "auto") -> Path:
    """Log the matrix to a W&B run of job type ``matrix`` (offline without an API key); return its run dir."""
    import wandb

    if wandb.run is not None:  # a job's run left open (it failed before its end): the table gets its own
        wandb.run.finish()
    run = wandb.init(project=project, dir=str(sweep_dir), group=sweep_dir.name, job_type="matrix",
                     name=f"matrix-{sweep_dir.name}", mode="offline" if wandb_offline(mode) else "online")
    run.log({"matrix": wandb.Table(columns=COLUMNS, data=matrix_rows(matrices))})
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir

"""What a run does before it starts, as lightning-hydra-template users expect: silence known-harmless noise,
send Lightning's own lines to the run's log, say where the run writes, and (``extras.print_config``) print
the composed config as a tree."""

import logging
import warnings
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from genbench.config import ExtrasSchema
from genbench.errors import ConfigError
from genbench.schema import typed_option

log = logging.getLogger("genbench")

# Order of the tree: the groups a reader looks for first.
_FIRST = ("dataset", "model", "trainer", "eval", "logger", "callbacks", "paths")


class _DropTips(logging.Filter):
    """Lightning's advertising lines ("💡 Tip: ... install litlogger"), which every run printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_known_noise() -> None:
    """Silence what every run printed and no user can act on; idempotent."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    # Lightning 2.6's own use of torch's pytree API, deprecated in torch 2.14: nothing here calls it.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # Every resumed run: genbench resumes into a run directory of its own, never the checkpoint's.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")


def lightning_lines_to_the_run_log() -> None:
    """Lightning's own lines (why ``fit`` stopped, the report of ``debug=profiler``) go where the run's
    other lines go, its ``train.log`` too, not to the console alone: imported before Hydra set up logging,
    Lightning gave its logger a console handler of its own and cut it off from the root logger's.
    Idempotent; nothing to do outside a run that set up logging (a library user's session)."""
    if not logging.getLogger().handlers:
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """The composed config as a rich tree, one branch per group; also saved to ``save_to``, as the
    template does."""
    tree = rich.tree.Tree("CONFIG", guide_style="dim")
    keys = [k for k in _FIRST if k in cfg] + [k for k in cfg if k not in _FIRST]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key), guide_style="dim").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with save_to.open("w") as f:
            rich.print(tree, file=f)


def announce(cfg: DictConfig, out_dir: Path) -> None:
    """Start of a run: print the run directory and, if asked, the config tree."""
    log.info("run directory: %s", out_dir.resolve())
    if _asked(cfg, "ignore_warnings"):
        warnings.filterwarnings("ignore")
    if _asked(cfg, "print_config"):
        print_config_tree(cfg, out_dir / "config_tree.log")


def _asked(cfg: DictConfig, switch: str) -> bool:
    """An ``extras`` switch as the config check reads it (``'false'`` is false). One it refuses
    (``extras.print_config=abc``, once taken as true and its tree printed) does nothing here: the check,
    next, names it."""
    try:
        return bool(typed_option(ExtrasSchema, cfg.get("extras") or OmegaConf.create({}), switch))
    except ConfigError:
        return False

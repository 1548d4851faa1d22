"""Keep every ``configs/model/<family>.yaml`` a copy of its family's config schema: the dataclass is the one
place of each option's default, the YAML lists the same options with the same values, for reading (its
comments are its own). A test fails when a YAML and its schema differ; this script repairs the YAML: a
wrong value is replaced, a missing option is added with the schema's comment, an unknown one is removed.

    python scripts/sync_model_configs.py           # repair the YAMLs after changing a schema
    python scripts/sync_model_configs.py --check   # list the YAMLs that differ; exit 1 if any
"""

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import hydra.utils
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genbench.schema import Schema, field_default  # noqa: E402

COMMENT_COLUMN = 25
RECURSIVE = "_recursive_: false       # the model builds its optimizer and scheduler (genbench.models.optim)"
FIELD = re.compile(r"^\s+(\w+): [^=]+=[^#]*?(?:#\s?(.*))?$")
COMMENT = re.compile(r"^\s+#\s?(.*)$")


def field_comments(schema: type[Schema]) -> dict[str, tuple[list[str], str | None]]:
    """Field name -> (the comment lines right above it, its trailing comment), read from the source of the
    schema and of the schemas it extends."""
    comments: dict[str, tuple[list[str], str | None]] = {}
    for cls in reversed(schema.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, Schema)) or cls is Schema:
            continue
        above: list[str] = []
        for line in inspect.getsource(cls).splitlines():
            if match := COMMENT.match(line):
                above.append(match.group(1))
            elif match := FIELD.match(line):
                comments[match.group(1)] = (above, match.group(2))
                above = []
            else:
                above = []
    return comments


def _value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _entries(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The header (comment lines before the first key) and, per top-level key, its lines: the comment
    lines right above it and its own line."""
    header, entries, pending, seen_key = [], {}, [], False
    for line in lines:
        key = re.match(r"^([A-Za-z_]\w*):", line)
        if key:
            entries[key.group(1)] = [*pending, line]
            pending, seen_key = [], True
        elif not seen_key and line.startswith("#"):
            header.append(line)
        else:
            pending = [line] if line.startswith("#") else []
    return header, entries


def render(path: Path) -> str:
    """The YAML of ``path`` with every option of its schema at the schema's default: the lines that
    already say so kept as they are, with their comments."""
    header, entries = _entries(path.read_text().splitlines())
    target = yaml.safe_load(path.read_text())["_target_"]
    schema = hydra.utils.get_class(target).config_schema
    fields = {f.name: f for f in dataclasses.fields(schema)}
    comments = field_comments(schema)
    out = [*header, f"_target_: {target}", RECURSIVE]
    for name in fields:  # in the schema's order
        default = field_default(fields[name])
        old = entries.get(name)
        if old is not None and yaml.safe_load(old[-1].split(":", 1)[1].split(" #")[0] or "null") == default:
            out += old
            continue
        above, trailing = comments.get(name, ([], None))
        if old is not None:  # a wrong value: the schema's, with the YAML's own comments
            above = [line.removeprefix("# ") for line in old[:-1]]
            trailing = old[-1].split(" #", 1)[1].strip() if " #" in old[-1] else trailing
        out += [f"# {text}".rstrip() for text in above]
        text = f"{name}: {_value(default)}"
        out.append(f"{text:<{COMMENT_COLUMN - 1}} # {trailing}" if trailing else text)
    return "\n".join(out) + "\n"


def differing(config_dir: Path = ROOT / "configs" / "model") -> list[Path]:
    return [p for p in sorted(config_dir.glob("*.yaml")) if p.read_text() != render(p)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only list the YAMLs that differ")
    args = parser.parse_args(argv)
    stale = differing()
    for path in stale:
        if args.check:
            print(f"{path.relative_to(ROOT)} differs from its schema: python scripts/sync_model_configs.py")
        else:
            path.write_text(render(path))
            print(f"rewrote {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

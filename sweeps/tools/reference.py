"""`python -m sweeps.tools.reference`: the manual's generated reference pages, written from the code and `conf/`.

- `docs/reference/keys.md`: every public config key (the composed config's leaves, each family's included), its
  default, what the checks allow (`settings.keys.allowed`, the checks' own constants) and its meaning (its
  comment in `conf/`), then every config group and its options;
- `docs/reference/cli.md`: each command-line tool's `--help`, as argparse prints it.

`--check` writes nothing and exits 1 when a page on disk differs from what the code makes (the test suite runs the
same comparison), so a renamed key or a new argument cannot leave the manual behind.
"""
import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"
TOOLS = {"sweeps.report": "sweeps.tools.report.cli", "sweeps.promote": "sweeps.tools.promote",
         "sweeps.export": "sweeps.tools.export", "sweeps.jumps": "sweeps.tools.jumps",
         "sweeps.bench": "sweeps.tools.bench.cli", "sweeps.tools.reference": "sweeps.tools.reference"}
HEADER = "<!-- written by `python -m sweeps.tools.reference` from the code and conf/: edit those, not this page -->\n\n"


def cell(value) -> str:
    """A default as YAML writes it (`null`, `false`, `[256, 16, 1]`)."""
    import json
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("|", "\\|")
    return f"`{text}`" if text else "`''`"


def keys_page() -> str:
    from ..settings.keys import allowed, comments, composed_leaves, groups
    leaves, notes, rules = composed_leaves(), comments(), allowed()
    lines = [HEADER + "# Config keys", "",
             "Every key a job's config holds, as `KEY=VALUE` on the command line of `python -m sweeps.run` (the "
             "family's keys exist under their `diffusion=` option). A bad value ends the job before any work with "
             "exit code 2 and one line naming the key and what is allowed.", "",
             "| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key in sorted(leaves, key=lambda k: ("." in k, k)):  # (top-level keys first)
        if key.split(".")[0] in ("hydra", "scale"):
            continue
        lines.append(f"| `{key}` | {cell(leaves[key])} | {rules.get(key, '')} | {notes.get(key, '').replace('|', '/')} |")
    lines += ["", "## Config groups", "", "`GROUP=OPTION` picks an option (`+experiment=NAME` adds an ablation's "
              "sweep, `+debug=tiny` a job of seconds).", "", "| group | options |", "|---|---|"]
    lines += [f"| `{group}` | {', '.join(f'`{o}`' for o in options)} |" for group, options in groups().items()]
    return "\n".join(lines) + "\n"


def help_of(module: str) -> str:
    """A tool's `--help`, at a fixed width (argparse follows $COLUMNS)."""
    import importlib
    out, before = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            importlib.import_module(module).main(["--help"])
    finally:
        os.environ.pop("COLUMNS") if before is None else os.environ.__setitem__("COLUMNS", before)
    return out.getvalue().rstrip()


def cli_page() -> str:
    lines = [HEADER + "# Command-line tools", "",
             "`python -m sweeps.run [GROUP=OPTION ...] [KEY=VALUE ...]` runs one job; `-m` runs a multirun or a sweep "
             "over comma lists (`distill.mu_s=0.5,0.9`), `hydra/sweeper=optuna` an Optuna study. Its keys and groups: "
             "[Config keys](keys.md). The other tools:", ""]
    for name, module in TOOLS.items():
        lines += [f"## `python -m {name}`", "", "```text", help_of(module), "```", ""]
    return "\n".join(lines)


PAGES = {"keys.md": keys_page, "cli.md": cli_page}


def stale() -> list:
    """The generated pages whose file differs from what the code makes now."""
    return [name for name, make in PAGES.items() if not (DOCS / name).is_file() or (DOCS / name).read_text() != make()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.tools.reference", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    a = p.parse_args(argv)
    if a.check:
        old = stale()
        for name in old:
            print(f"docs/reference/{name} is out of date: run python -m sweeps.tools.reference", file=sys.stderr)
        return 1 if old else 0
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, make in PAGES.items():
        (DOCS / name).write_text(make())
        print(f"wrote docs/reference/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The manual cannot drift from the code (issue 44): the generated reference pages equal what the code makes now,
the keys page names every key the config holds, the README stays a front door, and every command the README and
the pages show names real keys, groups and flags (a renamed key breaks this test, not a reader)."""
import re
import shlex

import pytest

from conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
TOOLS = {"sweeps.report", "sweeps.promote", "sweeps.export", "sweeps.jumps", "sweeps.bench", "sweeps.tools.reference"}


def test_the_generated_reference_pages_are_up_to_date():
    from sweeps.tools.reference import stale
    assert stale() == [], "run: .venv/bin/python -m sweeps.tools.reference"


def test_the_keys_page_lists_every_key_the_config_can_hold():
    from sweeps.run import config_keys
    from sweeps.settings.keys import OVERLAYS
    page = (REPO / "docs" / "reference" / "keys.md").read_text()
    listed = set(re.findall(r"^\| `([\w.]+)` \|", page, re.M))
    _, leaves = config_keys()
    overlay_only = set()
    for path in (REPO / "conf").rglob("*.yaml"):  # (keys that only an experiment or a scale defines)
        if path.parent.relative_to(REPO / "conf").as_posix().split("/")[0] in OVERLAYS:
            overlay_only |= set(re.findall(r"^(\w+):", path.read_text(), re.M))
    public = {k for k in leaves if not k.startswith(("hydra", "scale", "defaults")) and k not in overlay_only}
    assert public - listed == set(), "keys missing from docs/reference/keys.md"
    assert {"distill.clip_teacher", "distill.nonfinite_grads", "distill.cd_distance", "teacher.sha256"} <= listed


def test_the_readme_is_a_front_door_linking_into_the_manual():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 10_000, f"README.md is {len(text.encode())} bytes: reference belongs in docs/"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).is_file(), link
    assert "bash scripts/setup.sh && .venv/bin/python -m sweeps.run" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in (REPO / ".ci" / "run").read_text()


def commands():
    """Every `python -m sweeps.*` command in a shell block of the README or a page, continuation lines joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;", line.split(" #")[0]):
                    m = re.search(r"python -m (sweeps[\w.]*)\s*(.*)", part)
                    if m:
                        found.append((page.relative_to(REPO).as_posix(), m.group(1), m.group(2).strip()))
    return found


def test_the_pages_show_commands():
    assert len(commands()) > 30


@pytest.mark.parametrize("page,module,args", commands(), ids=lambda v: str(v)[:60])
def test_every_command_shown_names_real_keys_groups_and_flags(page, module, args):
    words = [w for w in shlex.split(args) if not w.startswith("$")]
    if module == "sweeps.run":
        from sweeps.run import unknown_group_option, unknown_key
        overrides = [w for w in words if "=" in w and not w.startswith("-")]
        assert unknown_group_option(overrides) is None and unknown_key(overrides) is None, (page, args)
        return
    assert module in TOOLS, f"{page}: python -m {module} is not one of the tools"
    from sweeps.tools.reference import TOOLS as MODULES
    from sweeps.tools.reference import help_of
    flags = set(re.findall(r"--[\w-]+", help_of(MODULES[module])))
    assert {w.split("=")[0] for w in words if w.startswith("--")} <= flags, (page, args)

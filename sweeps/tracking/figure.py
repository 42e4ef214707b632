"""One labelled figure of a run's sample grids: for each phase, the teacher and the student at the same
number of sampling steps, side by side, from the same noise.

Why a figure of our own: MLflow's image cards fill with the run's params and open on a step slider,
and its artifact view shows one PNG at a time, never two side by side. So the comparison is one PNG,
`samples/overview.png`, rebuilt from the grids in the job folder as each phase ends (a resumed job too).
A class-conditional job's grids have one row per class (the job folder's `classes.json` says how many);
the figure labels each row with its class.
"""
import json
import re
from pathlib import Path

STUDENT = re.compile(r"samples_phase(\d+)_(\d+)steps\.png$")
LABEL_W, HEADER_H, PAD = 120, 28, 8


def rows(folder: Path) -> list:
    """[(label, teacher grid, student grid)] per finished phase, in phase order; the teacher's grid at the same
    step count (`samples_teacher_{N}steps.png`) where it was drawn."""
    found = sorted((int(m.group(1)), int(m.group(2)), p) for p in Path(folder).glob("samples_phase*steps.png")
                   if (m := STUDENT.search(p.name)))
    return [(f"phase {phase}\n{steps} step{'s' * (steps != 1)}", Path(folder) / f"samples_teacher_{steps}steps.png",
             path) for phase, steps, path in found]


def overview(folder: Path, out: Path, scale: int = 2):
    """Write the figure (None when no phase has ended): a header, then one row per phase."""
    from PIL import Image, ImageDraw, ImageFont
    table = rows(folder)
    if not table:
        return None
    grids = [[_open(p, scale) for p in (teacher, student)] for _, teacher, student in table]
    cell_w = max(g.width for row in grids for g in row if g)
    heights = [max(g.height for g in row if g) for row in grids]
    figure = Image.new("RGB", (LABEL_W + 2 * (cell_w + PAD), HEADER_H + sum(h + PAD for h in heights)), "white")
    draw, font = ImageDraw.Draw(figure), ImageFont.load_default(size=16)
    for col, title in enumerate(("teacher", "student")):
        draw.text((LABEL_W + col * (cell_w + PAD), 4), title, fill="black", font=font)
    classes = row_classes(folder)
    y = HEADER_H
    for (label, _, _), row, h in zip(table, grids, heights):
        draw.multiline_text((4, y), label, fill="black", font=font)
        for col, grid in enumerate(row):
            if grid:
                figure.paste(grid, (LABEL_W + col * (cell_w + PAD), y))
        if classes:  # grids of one row per class (2 px of padding around each cell, as save_grid draws them)
            pitch = (h - 2 * scale) / len(classes)
            for i, k in enumerate(classes):
                draw.text((LABEL_W - 22, y + 2 * scale + i * pitch + pitch / 2 - 8), str(k), fill="black", font=font)
        y += h + PAD
    out = Path(out)
    figure.save(out)
    return out


def row_classes(folder: Path):
    """The classes of a class-conditional job's grid rows (its folder's `classes.json`), or None."""
    path = Path(folder) / "classes.json"
    return list(json.loads(path.read_text())["rows"]) if path.is_file() else None


def _open(path: Path, scale: int):
    from PIL import Image
    if not path.exists():
        return None
    image = Image.open(path).convert("RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)

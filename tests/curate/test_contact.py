"""Contact sheet: tiles a sdgen filter decision flags, blurs or drops carry a coloured border and a label."""

from __future__ import annotations

import numpy as np
from PIL import Image
from synth_output import make_output, row

from pipeline.cli import main
from pipeline.curate.contact import BORDER, CELL, MARK


def cli(argv) -> int:
    return main([str(a) for a in argv])


def _sheet(tmp_path, *policy):
    # sorted by (prompt, sample_idx): tile 0 drop (x-marked), tile 1 flag (concept), tiles 2-3 kept
    rows = [
        row("p0", 0, "red", group="circle", x_mark=0.4),
        row("p0", 1, "red", group="circle", flagged=True),
        row("p1", 0, "blue", group="square"),
        row("p1", 1, "blue", group="square"),
    ]
    url = make_output(tmp_path / "out", rows, shards=1)
    pol = tmp_path / "pol.yaml"
    pol.write_text(
        "name: marks\nrules:\n  - {name: x, when: 'safety_x_mark > 0.25', action: drop}\n"
        "  - {name: concept, when: safety_flagged, action: flag}\n"
    )
    assert cli(["filter", url, "--policy", pol]) == 0
    assert cli(["contact-sheet", url, "-o", tmp_path / "s.png", *policy]) == 0
    return np.asarray(Image.open(tmp_path / "s.png").convert("RGB"))


def _frame(px, tile):
    """The pixels of the tile's outer BORDER-wide frame, as a set of RGB tuples."""
    t = px[:CELL, tile * CELL : (tile + 1) * CELL]
    frame = np.concatenate(
        [
            t[:BORDER].reshape(-1, 3),
            t[-BORDER:].reshape(-1, 3),
            t[:, :BORDER].reshape(-1, 3),
            t[:, -BORDER:].reshape(-1, 3),
        ]
    )
    return {tuple(int(v) for v in p) for p in frame}


def _label_has(px, tile, rgb) -> bool:
    """Some label pixel near the colour (text is antialiased; black text on white stays grey)."""
    lab = px[CELL:, tile * CELL : (tile + 1) * CELL].astype(int)
    return bool((np.abs(lab - np.array(rgb)).max(-1) < 70).any())


def test_flagged_tiles_framed_and_labelled(tmp_path):
    px = _sheet(tmp_path)
    assert px.shape == (CELL + 3 * 11 + 6, 4 * CELL, 3)
    assert _frame(px, 0) == {MARK["drop"]} and _frame(px, 1) == {MARK["flag"]}
    for kept in (2, 3):  # the stored image's light frame, upscaled: no policy colour anywhere
        assert _frame(px, kept) == {(236, 236, 236)}
        assert not any(_label_has(px, kept, c) for c in MARK.values())
    assert _label_has(px, 0, MARK["drop"]) and _label_has(px, 1, MARK["flag"])
    inner = px[
        BORDER + 20 : CELL - BORDER - 20, 20 : CELL - 20
    ]  # the dropped tile is blurred, not shown as stored
    assert len(np.unique(inner.reshape(-1, 3), axis=0)) > 2


def test_named_policy_missing_is_exit_2(tmp_path, capsys):
    px = _sheet(tmp_path, "--policy", "marks")
    assert _frame(px, 1) == {MARK["flag"]}
    assert cli(["contact-sheet", tmp_path / "out", "-o", tmp_path / "t.png", "--policy", "nosuch"]) == 2
    assert "no decisions at" in capsys.readouterr().err

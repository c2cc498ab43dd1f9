"""The notes' VGG-16 and AlexNet listings, number by number.

The reference is the notes file itself (``../shared/seed/`` next to the
repository): its lines are parsed here and every label, shape, memory
expression and parameter count is compared with what ``summary(...,
style='notes' | 'listing')`` prints.  Without the notes the tests skip.
"""
import os
import re

import pytest

import convcore as cc
from convcore import models
from convcore.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTES = os.path.join(ROOT, "..", "shared", "seed", "000_6f98e25b9753d42a.txt")


@pytest.fixture(scope="module")
def notes_text():
    if not os.path.isfile(NOTES):
        pytest.skip(f"the course notes are not at {os.path.normpath(NOTES)}")
    with open(NOTES, encoding="utf-8") as f:
        return f.read()


def _clean(line):
    """A notes line in plain text: no LaTeX, no bold, single spaces."""
    line = line.replace("$", "").replace("\\times", "*").replace("**", "")
    line = re.sub(r"\\text\{([^}]*)\}", r"\1", line)
    line = re.sub(r"\s*\*\s*", "*", line)
    line = re.sub(r"\s*=\s*", "=", line)
    return " ".join(line.split())


MEM_LINE = re.compile(r"^(?P<label>[A-Z0-9-]+): \[(?P<dims>[0-9x]+)\] memory: (?P<mem>\S+) "
                      r"params: (?P<params>.+?)$")


def _product(expr):
    """Value of a product like ``(3*3*64)*128``: only digits, ``*`` and brackets."""
    if not re.fullmatch(r"[0-9*()]+", expr):
        raise ValueError(f"not a product of integers: {expr!r}")
    value = 1
    for factor in re.findall(r"[0-9]+", expr):
        value *= int(factor)
    return value


def _parse_memory_listing(lines):
    """(label, dims, memory, evaluated memory, params, evaluated weights) per line."""
    out = []
    for line in lines:
        m = MEM_LINE.match(_clean(line))
        if not m:
            continue
        mem = m["mem"]
        count = _product(mem.split("=")[0])          # "224*224*64" or "4096"
        params = m["params"].replace("(not counting biases)", "").strip()
        weights = int(params.split("=")[-1].replace(",", "").strip())
        if "=" in params:                            # the expression equals the number
            assert _product(params.split("=")[0]) == weights
        out.append((m["label"], m["dims"], mem, count, params.replace(" ", ""), weights))
    return out


def _notes_vgg16(text):
    """The first complete VGG-16 listing of the notes (INPUT ... three FC)."""
    rows = _parse_memory_listing(text.splitlines())
    start = next(i for i, r in enumerate(rows) if r[0] == "INPUT")
    table = rows[start:start + 22]
    assert [r[0] for r in table].count("FC") == 3 and table[-1][1] == "1x1x1000"
    return table


def _notes_alexnet(text):
    pat = re.compile(r"^\[[0-9x]+\] [A-Z]")
    lines = [_clean(line) for line in text.splitlines()]
    start = lines.index("[227x227x3] INPUT")
    out = []
    for line in lines[start:]:
        if pat.match(line):
            out.append(line)
        elif out and out[-1].startswith("[1000]"):
            break
    return out


def test_notes_vgg16_listing_matches_line_by_line(notes_text):
    ref = _notes_vgg16(notes_text)
    s = cc.summary(models.vgg16(rng=0), (3, 224, 224), style="notes")
    got = _parse_memory_listing(str(s).splitlines())
    assert len(got) == len(ref) == 22
    for g, r in zip(got, ref):
        assert g == r, (g, r)
    # the notes print the listing twice (LaTeX \times and plain *): both agree
    rows = _parse_memory_listing(notes_text.splitlines())
    starts = [i for i, r in enumerate(rows) if r[0] == "INPUT"]
    assert len(starts) == 2
    assert rows[starts[1]:starts[1] + 22] == ref


def test_notes_vgg16_totals(notes_text):
    ref = _notes_vgg16(notes_text)
    act = sum(r[3] for r in ref)
    weights = sum(r[5] for r in ref)
    assert act == 15_237_608 and weights == 138_344_128
    s = cc.summary(models.vgg16(rng=0), (3, 224, 224), style="notes")
    text = str(s).splitlines()
    mem_total = text[-2]
    par_total = text[-1]
    assert f"{act:,} activations * 4 bytes = {act * 4:,} bytes ~= 58 MiB" in mem_total
    assert round(act * 4 / 2**20) == 58
    biases = 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512 + 4096 * 2 + 1000
    assert f"{weights:,} (not counting biases; {weights + biases:,} with biases)" in par_total
    assert weights + biases == 138_357_544 == s.total_params
    first = s.notes_rows()[1]
    assert (first["label"], first["dims"], first["weights"]) == ("CONV3-64", "224x224x64", 1_728)


def test_notes_alexnet_listing_matches_line_by_line(notes_text):
    ref = _notes_alexnet(notes_text)
    assert ref[0] == "[227x227x3] INPUT" and ref[-1] == "[1000] FC8: 1000 neurons (class scores)"
    assert len(ref) == 14
    got = cc.summary(models.alexnet(rng=0), (3, 227, 227), style="listing").listing()
    assert got == ref


def test_listing_of_a_double_width_alexnet_differs(notes_text):
    # the comparison can fail: a different network gives different lines
    ref = _notes_alexnet(notes_text)
    got = cc.summary(models.alexnet(num_classes=10, rng=0), (3, 227, 227)).listing()
    assert got[:-1] == ref[:-1] and got[-1] != ref[-1]
    vgg13 = _parse_memory_listing(cc.summary(models.vgg13(rng=0), (3, 224, 224)).notes())
    assert vgg13 != _notes_vgg16(notes_text)


def test_summary_cli_notes_and_listing(capsys, notes_text):
    assert main(["summary", "vgg16", "--notes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert _parse_memory_listing(out) == _notes_vgg16(notes_text)
    assert "138,344,128" in out[-1]
    assert main(["summary", "alexnet", "--listing"]) == 0
    assert capsys.readouterr().out.splitlines() == _notes_alexnet(notes_text)


def test_summary_style_is_checked():
    with pytest.raises(ValueError, match="style must be one of table, notes, listing, got 'x'"):
        cc.summary(models.lenet5(rng=0), (1, 28, 28), style="x")


def test_notes_forms_of_other_networks():
    s = cc.summary(models.lenet5(rng=0), (1, 28, 28))
    notes = s.notes()
    assert notes[1] == "CONV5-6: [28x28x6] memory: 28*28*6=4704 params: (5*5*1)*6 = 150"
    # LeNet's first FC reads a 5x5x16 map
    assert any(line.startswith("FC: [1x1x120]") and "5*5*16*120 = 48,000" in line
               for line in notes)
    listing = s.listing()
    assert listing[1] == "[28x28x6] CONV1: 6 5x5 filters at stride 1, pad 2"
    assert listing[-1] == "[10] FC5: 10 neurons (class scores)"
    r = cc.summary(models.resnet18(rng=0), (3, 224, 224)).listing()
    assert r[1] == "[112x112x64] CONV1: 64 7x7 filters at stride 2, pad 3"
    assert "[56x56x64] MAX POOL1: 3x3 filters at stride 2, pad 1" in r

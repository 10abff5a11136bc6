"""The README and the docs site: short, linked, and never at odds with the data or the code.

Every page goes through tools/docs_hooks.py's ``render``, the function MkDocs calls at build time,
so what is checked here is what the site shows.
"""
from __future__ import annotations

import csv
import glob
import importlib.util
import os
import re
from typing import Dict, List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
DATA_FILES = sorted(glob.glob(os.path.join(ROOT, "results", "*.csv")))
README_MAX_LINES = 250

_spec = importlib.util.spec_from_file_location("docs_hooks", os.path.join(ROOT, "tools", "docs_hooks.py"))
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def markdown_tables(text: str) -> List[List[List[str]]]:
    """The markdown tables of a text, each as rows of cells (the separator row dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", stripped[1:-1])]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def unmarked(cell: str) -> str:
    return cell.replace("**", "").replace("★", "").strip()


def table_markers(text: str) -> List[tuple]:
    return [(m.group(2).strip(), m.group(3)) for m in hooks.MARKER.finditer(text) if m.group(1) == "table"]


def test_readme_is_short():
    lines = read(README).count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES} (the rest goes in docs/)"


@pytest.mark.parametrize("path", [README, *DOCS, os.path.join(ROOT, "results", "NOTES.md")], ids=rel)
def test_every_relative_link_resolves(path):
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)  # links in code blocks are examples
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0]
        if not os.path.exists(os.path.join(os.path.dirname(path), file_part)):
            broken.append(target)
    assert not broken, f"{rel(path)} links to missing files: {broken}"


def test_the_site_lists_every_page():
    nav = read(os.path.join(ROOT, "mkdocs.yml"))
    missing = [rel(p) for p in DOCS if os.path.basename(p) not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_every_page_renders_without_leftover_markers(path):
    rendered = hooks.render(read(path))
    assert "{{" not in rendered, f"{rel(path)} keeps a marker the hook does not know"


def _data_table(path: str):
    header, rows, comments = hooks.read_data(rel(path))
    return header, rows, comments


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_inserted_tables_equal_their_data_files(path):
    """A page's measured table is its data file cell for cell: no number rounded, dropped or added."""
    for data_path, style in table_markers(read(path)):
        header, rows, _ = hooks.read_data(data_path)
        rendered = hooks.render_marker("table", data_path, style)
        tables = markdown_tables(rendered)
        assert len(tables) == 1, f"{data_path}: expected one table"
        shown = tables[0]
        assert [unmarked(c).removesuffix(" ↑").removesuffix(" ↓") for c in shown[0]] == header
        assert [[unmarked(c) for c in row] for row in shown[1:]] == rows, f"{rel(path)}: {data_path} shown differently"


def test_every_data_file_has_its_command_and_a_page():
    used = {data for page in DOCS for data, _ in table_markers(read(page))}
    for path in DATA_FILES:
        header, rows, comments = hooks.read_data(rel(path))
        assert any(c.startswith("command:") for c in comments), f"{rel(path)} does not say which command made it"
        assert rows, f"{rel(path)} has no rows"
        assert rel(path) in used, f"{rel(path)} is shown on no page"


def _float(cell: str) -> float:
    return float(cell.replace(",", ""))


def _table1_files() -> List[str]:
    return [data for page in DOCS for data, style in table_markers(read(page)) if style == "table1"]


@pytest.mark.parametrize("data_path", sorted(set(_table1_files())))
def test_table1_averages_and_marks_follow_the_rows(data_path):
    """A sweep's "average" row is the mean of its task rows (to the rounding of the cells), its runs
    the sum; the marks are DSRL's rule. A mistyped value in the data file fails here."""
    header, rows, _ = hooks.read_data(data_path)
    tasks = [r for r in rows if not r[0].startswith("average")]
    averages = [r for r in rows if r[0].startswith("average")]
    assert len(averages) == 1 and len(tasks) >= 2
    for i, name in enumerate(header[1:], start=1):
        values = [_float(r[i]) for r in tasks]
        if name == "runs":
            assert _float(averages[0][i]) == sum(values), f"{data_path}: runs"
        else:
            # each cell and the average are rounded to 2 decimals: 0.005 each way at most
            assert abs(_float(averages[0][i]) - sum(values) / len(values)) <= 0.0101, f"{data_path}: {name}"
    for row in rows:
        marked = hooks.table1_marks(header, row)
        for i, name in enumerate(header):
            if name.endswith(" cost"):
                assert marked[i].startswith("**") == (_float(row[i]) <= 1.0)
        starred = [i for i, cell in enumerate(marked) if "★" in cell]
        safe = {i: _float(row[i]) for i, name in enumerate(header)
                if name.endswith(" reward") and _float(row[i + 1]) <= 1.0}
        assert starred == ([max(safe, key=safe.get)] if safe else [])


def test_table1_marks_on_a_constructed_row():
    header = ["task", "A reward", "A cost", "B reward", "B cost", "C reward", "C cost", "runs"]
    marked = hooks.table1_marks(header, ["t", "0.50", "1.00", "0.90", "1.01", "0.40", "0.00", "3"])
    assert marked == ["t", "**0.50** ★", "**1.00**", "0.90", "1.01", "**0.40**", "**0.00**", "3"]
    assert hooks.table1_marks(header[:3], ["t", "0.9", "2.0"]) == ["t", "0.9", "2.0"]  # nothing safe, no star


def test_clamp_means_are_the_means_of_their_seeds():
    header, rows, _ = hooks.read_data("results/clamp_cost_value.csv")
    for setting in {r[0] for r in rows}:
        seeds = [r for r in rows if r[0] == setting and r[1] != "mean"]
        (mean,) = [r for r in rows if r[0] == setting and r[1] == "mean"]
        for i in range(2, len(header)):
            expected = sum(_float(r[i]) for r in seeds) / len(seeds)
            assert abs(_float(mean[i]) - expected) <= 0.0051, f"{setting} {header[i]}"


# A number with a unit of time, rate or size, a speed-up, or a share: measured, so it must come
# from a data file, not be typed into a page.
MEASURED = re.compile(
    r"(?<![\w.-])\d[\d,]*(\.\d+)?\s*(ms|s|sec|seconds?|min|minutes?|h|hours?|days?|it/s|steps/s|"
    r"[KMG]i?B|%)(?![\w/])|\b\d+(\.\d+)?x (faster|slower|more|less)\b")


def _prose(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands, whose flags are not measurements
    text = re.sub(r"`[^`\n]*`", "", text)
    return hooks.MARKER.sub("", text)


@pytest.mark.parametrize("path", [README, *DOCS], ids=rel)
def test_no_page_types_a_measured_number(path):
    found = [m.group(0) for m in MEASURED.finditer(_prose(read(path)))]
    assert not found, f"{rel(path)} types measured numbers {found}: put them in a results/ data file"


def test_the_measurement_check_catches_a_typed_number():
    assert MEASURED.search(_prose("the suite ran in 8 min 6 s on the quiet machine"))
    assert MEASURED.search(_prose("it trains at 31 it/s"))
    assert not MEASURED.search(_prose("run `make test` with `--max_timesteps 5000`"))


def test_readme_methods_match_the_code():
    from lspc.methods.baselines import ALGOS
    text = read(README)
    (methods,) = [t for t in markdown_tables(text) if t[0][0] == "method"]
    names = [re.sub(r"\s*\(.*\)$", "", row[0]).lower() for row in methods[1:]]
    assert names[0] == "lspc"
    assert sorted(names[1:]) == sorted(ALGOS)
    words = {9: "nine", 10: "ten"}
    assert f"{words[len(ALGOS)]} baselines" in text


def test_flag_tables_cover_every_flag_with_its_help():
    import lspc_iql_configs
    pages = {"TrainConfig": lspc_iql_configs._parser(),
             "train_baseline": hooks._load_script("scripts/train_baseline.py")._parser()}
    for source, parser in pages.items():
        (table,) = markdown_tables(hooks.render_marker("flags", source, None))
        shown: Dict[str, str] = {row[0].strip("`"): row[3] for row in table[1:]}
        flags = [max(a.option_strings, key=len) for a in parser._actions if a.option_strings and a.dest != "help"]
        assert sorted(shown) == sorted(flags), source
        assert all(shown.values()), f"{source}: flags without help {[f for f, h in shown.items() if not h]}"


def test_a_broken_data_file_stops_the_build(tmp_path, monkeypatch):
    bad = tmp_path / "results" / "bad.csv"
    bad.parent.mkdir()
    bad.write_text("# command: nothing\na,b\n1,2,3\n", encoding="utf-8")
    monkeypatch.setattr(hooks, "ROOT", str(tmp_path))
    with pytest.raises(hooks.DocsError, match="row 1 has 3 cells"):
        hooks.render("{{ table: results/bad.csv }}")
    with pytest.raises(hooks.DocsError, match="does not exist"):
        hooks.render("{{ table: results/missing.csv }}")
    with pytest.raises(hooks.DocsError, match="unknown marker"):
        hooks.render("{{ tabel: results/bad.csv }}")


def test_data_files_parse_as_csv():
    for path in DATA_FILES:
        with open(path, encoding="utf-8") as f:
            rows = list(csv.reader(line for line in f if not line.startswith("#")))
        assert len({len(r) for r in rows}) == 1, rel(path)


def test_an_included_report_is_inserted_as_written_but_for_its_title(tmp_path, monkeypatch):
    report = "results/mutation/README.md"
    lines = open(os.path.join(ROOT, report), encoding="utf-8").read().splitlines()
    rendered = hooks.render("{{ include: " + report + " }}")
    assert lines[0].startswith("# ") and lines[0] not in rendered
    assert rendered.strip() == "\n".join(lines[1:]).strip()
    with pytest.raises(hooks.DocsError, match="under results/"):
        hooks.render("{{ include: README.md }}")
    with pytest.raises(hooks.DocsError, match="does not exist"):
        hooks.render("{{ include: results/none.md }}")

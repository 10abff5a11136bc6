"""MkDocs hook: the docs' measured tables and their code-derived tables, inserted at build time.

A page never types a number that can go stale. It holds markers, and ``render`` replaces each one:

    {{ table: results/speed.csv }}          a data file under results/ as a markdown table, with the
                                            command that made it (its ``# command:`` header lines)
    {{ table: results/sweep.csv | table1 }} the same in the paper's Table 1 style: a method's safe cells
                                            (normalized cost <= 1) in bold, the safe method with the
                                            highest reward in each row starred
    {{ flags: TrainConfig }}                every flag of train_lspc_iql.py with its help, as --help has it
    {{ flags: train_baseline }}             every flag of scripts/train_baseline.py with its help
    {{ fields: BaselineConfig }}            the fields of a baseline run's config.yaml
    {{ task_overrides }}                    lspc_iql_configs.TASK_OVERRIDES, one row per task
    {{ baseline_defaults }}                 each baseline's schedule and hyperparameters
    {{ thresholds }}                        each suite's DSRL cost thresholds
    {{ cards: media/cards }}                scripts/dataset_table.py's table of the dataset cards there
    {{ value: n_tasks }}                    a count read from the code (see ``code_values``)
    {{ default: TrainConfig.eval_every }}   a config field's default
    {{ gpu_plan }}                          the GPU node's seconds per step (tools/gpu_node/gpu_check.py)

mkdocs.yml names this file under ``hooks:``; tests/test_docs.py renders every page through ``render``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import importlib.util
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MARKER = re.compile(r"\{\{\s*(\w+)\s*(?::\s*([^}|]*?)\s*)?(?:\|\s*(\w+)\s*)?\}\}")
SAFE_COST = 1.0  # DSRL: a normalized cost at most 1 is safe


class DocsError(Exception):
    """A marker that cannot be rendered: the build must fail, not print a broken page."""


# ---------------------------------------------------------------- data files

def read_data(path: str) -> Tuple[List[str], List[List[str]], List[str]]:
    """A results CSV: its header row, its rows, and its ``# key: text`` comment lines (command, what)."""
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        raise DocsError(f"data file {path} does not exist")
    with open(full, encoding="utf-8") as f:
        lines = f.read().splitlines()
    comments = [line[1:].strip() for line in lines if line.startswith("#")]
    table = list(csv.reader(line for line in lines if line.strip() and not line.startswith("#")))
    if not table:
        raise DocsError(f"data file {path} has no header row")
    header, rows = table[0], table[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise DocsError(f"{path}: row {number} has {len(row)} cells, the header {len(header)}")
    return header, rows, comments


def _number(cell: str) -> Optional[float]:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def table1_marks(header: Sequence[str], row: Sequence[str]) -> List[str]:
    """The cells of one Table 1 row with DSRL's marks: ``**x**`` for a safe method's reward and cost,
    and ★ after the reward of the safe method with the highest reward."""
    cells = list(row)
    safe_rewards = {}
    for i, name in enumerate(header):
        if name.endswith(" reward") and i + 1 < len(header) and header[i + 1] == name[:-len("reward")] + "cost":
            reward, cost = _number(row[i]), _number(row[i + 1])
            if reward is not None and cost is not None and cost <= SAFE_COST:
                cells[i], cells[i + 1] = f"**{row[i]}**", f"**{row[i + 1]}**"
                safe_rewards[i] = reward
    if safe_rewards:
        best = max(safe_rewards, key=lambda i: safe_rewards[i])
        cells[best] += " ★"
    return cells


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def render_table(path: str, style: Optional[str]) -> str:
    header, rows, comments = read_data(path)
    if style == "table1":
        rows = [table1_marks(header, row) for row in rows]
        shown = [h + (" ↑" if h.endswith(" reward") else " ↓" if h.endswith(" cost") else "") for h in header]
        legend = ("\n\nNormalized reward and cost (DSRL); **bold**: safe (normalized cost <= 1); ★: the safe method "
                  "with the highest reward.")
    elif style is None:
        shown, legend = header, ""
    else:
        raise DocsError(f"unknown table style {style!r} for {path}")
    notes = [c for c in comments if not c.startswith("command:")]
    commands = [c[len("command:"):].strip() for c in comments if c.startswith("command:")]
    text = markdown_table(shown, rows) + legend
    text += f"\n\n??? info \"Data: `{path}`\"\n"
    for note in notes:
        text += f"    {note}\n\n"
    for command in commands:
        text += f"    ```bash\n    {command}\n    ```\n"
    return text


# ---------------------------------------------------------------- code-derived tables

def _load_script(relative_path: str) -> Any:
    name = "_docs_" + re.sub(r"\W", "_", relative_path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    return str(value)


def _help_text(text: Optional[str]) -> str:
    return " ".join((text or "").split())


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return re.sub(r"^Optional\[(.*)\]$", r"\1", text)


def _flag_rows(parser: argparse.ArgumentParser, dataclass_type: Optional[type] = None) -> List[List[str]]:
    """One row per flag of ``parser``, with its help as --help prints it; the default and type come
    from ``dataclass_type``'s field of the same name where there is one."""
    fields = {f.name: f for f in dataclasses.fields(dataclass_type)} if dataclass_type else {}
    rows = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        field = fields.get(action.dest)
        if field is not None:
            kind = _type_text(field.type)
            default = "" if field.default is dataclasses.MISSING else _default_text(field.default)
        else:
            if action.metavar:
                kind = action.metavar
            elif isinstance(action.type, type):
                kind = action.type.__name__
            else:
                kind = "flag" if action.nargs == 0 else "str"
            default = "" if action.default in (argparse.SUPPRESS, None, False) else _default_text(action.default)
        rows.append([f"`{flag}`", kind, default, _help_text(action.help)])
    return rows


def train_config_flags() -> str:
    import lspc_iql_configs
    return markdown_table(["flag", "type", "default", "help"],
                          _flag_rows(lspc_iql_configs._parser(), lspc_iql_configs.TrainConfig))


def train_baseline_flags() -> str:
    parser = _load_script("scripts/train_baseline.py")._parser()
    return markdown_table(["flag", "type", "default", "help"], _flag_rows(parser))


def config_fields(cls: type) -> str:
    from lspc_iql_configs import field_help
    helps = field_help(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = _default_text(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _default_text(f.default_factory())
        else:
            default = "required"
        rows.append([f"`{f.name}`", _type_text(f.type), default, helps.get(f.name, "")])
    return markdown_table(["field", "type", "default", "meaning"], rows)


def config_default(qualified_name: str) -> str:
    from lspc.methods.baselines import BaselineConfig
    from lspc_iql_configs import TrainConfig
    classes = {"TrainConfig": TrainConfig, "BaselineConfig": BaselineConfig}
    class_name, _, name = qualified_name.partition(".")
    for f in dataclasses.fields(classes.get(class_name, object)) if class_name in classes else []:
        if f.name == name and f.default is not dataclasses.MISSING:
            return f"`{_default_text(f.default)}`"
    raise DocsError(f"no default for {qualified_name!r} (expected TrainConfig.<field> or BaselineConfig.<field>)")


def task_overrides() -> str:
    from lspc.envs import SUITES
    from lspc_iql_configs import TASK_OVERRIDES, TrainConfig
    columns = sorted({key for row in TASK_OVERRIDES.values() for key in row})
    rows = []
    for suite, tasks in SUITES.items():
        for task in tasks:
            overrides = TASK_OVERRIDES[task]
            rows.append([task, suite] + [_default_text(overrides.get(c, getattr(TrainConfig, c))) for c in columns])
    return markdown_table(["task", "suite"] + [f"`{c}`" for c in columns], rows)


def thresholds() -> str:
    from lspc.envs import SUITES, cost_limits
    rows = [[suite, len(tasks), ", ".join(f"{k:g}" for k in cost_limits(tasks[0]))] for suite, tasks in SUITES.items()]
    return markdown_table(["suite", "tasks", "thresholds κ"], rows)


def baseline_defaults() -> str:
    from lspc.methods.baselines import ALGOS, default_hparams, default_schedule
    bullet, metadrive = "OfflineBallRun-v0", "OfflineMetadrive-easysparse-v0"
    rows = []
    for algo in ALGOS:
        schedule, md_schedule = default_schedule(algo, bullet), default_schedule(algo, metadrive)
        hparams = {k: v for k, v in default_hparams(algo, bullet).items() if k != "prompts"}
        rows.append([f"`{algo}`", _default_text(schedule["max_timesteps"]), _default_text(md_schedule["max_timesteps"]),
                     str(schedule["batch_size"]),
                     ", ".join(f"{k}={v}" for k, v in sorted(hparams.items()))])
    return markdown_table(["`--algo`", "steps", "steps on MetaDrive", "batch", f"hyperparameters ({bullet})"], rows)


def dataset_cards(directory: str) -> str:
    dataset_table = _load_script("scripts/dataset_table.py")
    paths = sorted(glob.glob(os.path.join(ROOT, directory, "*.card.json")))
    if not paths:
        raise DocsError(f"no dataset cards in {directory}")
    return dataset_table.table([dataset_table.read_card(p) for p in paths]).rstrip("\n")


def gpu_plan() -> str:
    """The offline GPU node's plan: run.sh's own work and each GPU check step's budget, with the total."""
    check = _load_script("tools/gpu_node/gpu_check.py")
    rows = [[f"`run.sh`: {name}", seconds] for name, seconds in check.RUN_SH_S.items()]
    rows += [[f"`{name}`", seconds] for name, seconds in check.BUDGET_S.items()]
    rows.append(["**total**", f"**{sum(check.RUN_SH_S.values()) + sum(check.BUDGET_S.values())}**"])
    return markdown_table(["step", "seconds on one H100 (plan)"], rows)


def code_values() -> Dict[str, int]:
    """Counts that pages state, read from the code so that they cannot drift from it."""
    from lspc.methods.baselines import ALGOS
    from lspc.envs import ALL_TASKS, SUITES
    bundle = _load_script("tools/gpu_node/bundle.py")
    return {"n_tasks": len(ALL_TASKS), **{f"n_{suite}": len(tasks) for suite, tasks in SUITES.items()},
            "n_baselines": len(ALGOS), "n_methods": len(ALGOS) + 1, "gpu_node_carry_mib": bundle.NODE_CARRY_MIB,
            "gpu_bundle_limit_mib": bundle.LIMIT_MIB, "gpu_return_file_mib": bundle.RETURN_FILE_MIB}


# ---------------------------------------------------------------- the hook

def include_report(path: str) -> str:
    """A markdown report that a script under results/ writes (the mutation report, the planted-error
    tables), inserted as it is but for its title, which the page has."""
    if not path.startswith("results/") or not path.endswith(".md"):
        raise DocsError(f"include takes a markdown report under results/, got {path!r}")
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        raise DocsError(f"{path} does not exist")
    lines = open(full, encoding="utf-8").read().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip() + "\n"


def render_marker(kind: str, argument: Optional[str], style: Optional[str]) -> str:
    argument = (argument or "").strip()
    if kind == "table":
        return render_table(argument, style)
    if kind == "flags":
        renderers = {"TrainConfig": train_config_flags, "train_lspc_iql": train_config_flags,
                     "train_baseline": train_baseline_flags}
        if argument not in renderers:
            raise DocsError(f"unknown flags source {argument!r}; expected one of {', '.join(renderers)}")
        return renderers[argument]()
    if kind == "fields":
        if argument == "BaselineConfig":
            from lspc.methods.baselines import BaselineConfig
            return config_fields(BaselineConfig)
        if argument == "TrainConfig":
            from lspc_iql_configs import TrainConfig
            return config_fields(TrainConfig)
        raise DocsError(f"unknown config class {argument!r}")
    if kind == "task_overrides":
        return task_overrides()
    if kind == "thresholds":
        return thresholds()
    if kind == "baseline_defaults":
        return baseline_defaults()
    if kind == "cards":
        return dataset_cards(argument)
    if kind == "value":
        values = code_values()
        if argument not in values:
            raise DocsError(f"unknown value {argument!r}; expected one of {', '.join(values)}")
        return str(values[argument])
    if kind == "default":
        return config_default(argument)
    if kind == "include":
        return include_report(argument)
    if kind == "gpu_plan":
        return gpu_plan()
    raise DocsError(f"unknown marker {{{{ {kind} }}}}")


def render(markdown: str) -> str:
    """Every marker of a page replaced by what it stands for."""
    return MARKER.sub(lambda m: render_marker(m.group(1), m.group(2), m.group(3)), markdown)


def on_page_markdown(markdown: str, page: Any = None, config: Any = None, files: Any = None) -> str:
    try:
        return render(markdown)
    except DocsError as err:
        from mkdocs.exceptions import PluginError
        where = getattr(getattr(page, "file", None), "src_path", "a page")
        raise PluginError(f"{where}: {err}") from None

"""Mutation testing of the algorithm files: how many one-line changes to the code the tests notice.

    python scripts/mutation.py run [FILE ...] [--jobs N] [--workdir DIR]   # mutmut (default: all of TARGETS)
    python scripts/mutation.py report [--workdir DIR]                      # results/mutation/<file>.json and README.md

``run`` copies the working tree (tracked files and untracked, not ignored ones) to ``<workdir>/<file>/``
and runs mutmut 2 there, never in the repository: mutmut writes each mutant into the source file
on disk, and other processes (a test run, an editor) must never see one. Each mutant is tested with
``pytest -x`` on the fast tests that TARGETS maps its file to, one mutant at a time, in a process
forked from a server that imported torch and the other third-party libraries once (``serve``):
importing them took 2 of the 4 to 8 seconds a mutant cost. The project's own modules are never
imported by the server, so each forked test run imports the mutant from disk. mutmut's cache
(``<workdir>/<file>/.mutmut-cache``) keeps the verdicts, so an interrupted run continues where it
stopped, and a changed tests/ folder retests only the survivors.

``report`` reads those caches and writes, per file, ``results/mutation/<file>.json`` (killed,
survived, timeout, and every survivor's line and mutant) and the summary ``results/mutation/README.md``.
Each survivor is matched, by its original and mutated line, with an entry of
``results/mutation/survivors.toml``: ``verdict = "equivalent"`` with a one-line ``why``, or
``verdict = "killed"`` with the ``test`` added for it (listed once its rerun kills it). A survivor
without an entry is listed as unexplained. The score is (killed + timeout) / (killed + timeout +
survived - equivalent): a mutant that makes the tests hang is noticed, and one that does not compile
(mutmut 2 turns ``*args`` into ``/args``) is no program and counts in none of them.

String and f-string mutants are not generated: they change message wording and dict keys, not
the math (the one-line errors' exact text is checked by tests/test_bad_input.py and the others).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import inspect
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "mutation")
SURVIVORS_TOML = os.path.join(RESULTS, "survivors.toml")
DEFAULT_WORKDIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lspc-mutation")
TESTS_RECORD = ".mutation-tests.json"  # in each copy: the tests of its last run
LINES_RECORD = ".mutation-lines.json"  # in each copy: each mutant's original and mutated line

# The tests each file's mutants run against: those that exercise the file and take seconds, not
# minutes, because every mutant reruns them (a few hundred mutants per file). The multi-minute
# end-to-end tests (sweeps, fault injection, Slurm, SIGINT/resume of whole scripts, the MetaDrive
# and Safety-Gymnasium suites) add little per mutant that these do not check, at 10-100x the cost.
# The quick ones come first: pytest -x stops at the first failure, so most mutants die in seconds.
TARGETS: Dict[str, List[str]] = {
    "train_lspc_iql.py": [
        "tests/test_reference_lspc.py",  # one train() call and the acting recomputed independently
        "tests/test_losses.py",  # every loss, mask, clamp and policy by hand
        "tests/test_fast_step.py",  # the fused training step equals the plain one
    ],
    "lspc/methods/fisor.py": [
        "tests/test_reference_fisor.py",  # one iteration and the acting recomputed independently
        "tests/test_fisor.py",
    ],
    "lspc/methods/trac.py": [
        "tests/test_reference_trac.py",
        "tests/test_trac.py",  # ends with the sweep's budget guard, a process start
    ],
    "lspc/methods/cdt.py": [
        "tests/test_reference_cdt.py",
        "tests/test_cdt.py",
    ],
    "lspc/methods/baselines.py": [
        "tests/test_reference_baselines.py",  # one update of each osrl baseline, recomputed
        "tests/test_baselines.py::test_checkpoint_reload_gives_identical_actions",  # state_dict round trips
        "tests/test_baselines.py::test_baseline_method_loads_the_data_its_method_trains_on",
        "tests/test_cdt.py::test_sequence_sampler_checks_the_data",
        "tests/test_baselines.py::test_bc_safe_trains_only_on_trajectories_within_the_cost_limit",
        "tests/test_baselines.py::test_metrics_window_averages_and_names_the_first_non_finite_statistic",
        "tests/test_baselines.py::test_bad_input_one_line_error_and_nothing_written",
    ],
    "lspc/evaluation.py": [
        "tests/test_losses.py::test_better_than",  # feasibility-first model selection
        "tests/test_mutation_gaps.py",  # summaries and errors by hand
        "tests/test_eval.py",  # seeded episodes, vector modes, normalized scores, eval_lspc's results
        "tests/test_cdt.py::test_batched_stateful_policy_equals_osrls_one_episode_rollout",  # an EpisodicPolicy
    ],
    "lspc/data/dataset.py": [
        "tests/test_mutation_gaps.py",  # the transition buffer and the dataset checks by hand
        "tests/test_data.py",  # density grid filter
        "tests/test_experiments.py::test_data_ratio_keeps_whole_trajectories_and_is_seeded",
        "tests/test_experiments.py::test_data_ratio_through_load_dataset_and_the_config",
        "tests/test_losses.py::test_episode_dones",
        "tests/test_bad_input.py::test_dataset_shapes_must_match_the_env",  # check_dataset's errors
        "tests/test_bad_input.py::test_dataset_with_missing_keys",
        "tests/test_bad_input.py::test_dataset_with_nan",
        "tests/test_bad_input.py::test_missing_dataset_file",
        "tests/test_download.py::test_load_dataset_fetches_through_the_fallback",  # no dataset_path: fetched
    ],
}
# tests written beside these (issue 27's defaults tables) that check every method's settings
DEFAULTS_TESTS = "tests/test_defaults.py"
for _name in ("train_lspc_iql.py", "lspc/methods/fisor.py", "lspc/methods/trac.py", "lspc/methods/cdt.py", "lspc/methods/baselines.py"):
    TARGETS[_name].append(DEFAULTS_TESTS)

# mutmut's verdicts as stored in its cache
KILLED, SURVIVED, TIMEOUT, SUSPICIOUS, SKIPPED, UNTESTED = (
    "ok_killed", "bad_survived", "bad_timeout", "ok_suspicious", "skipped", "untested")


class MutationError(Exception):
    """Bad input: reported on one line, exit status 2."""


def slug(path: str) -> str:
    return path.replace("/", "__").removesuffix(".py")


def tests_for(path: str) -> List[str]:
    missing = [test for test in TARGETS[path] if not os.path.isfile(os.path.join(ROOT, test.split("::")[0]))]
    if missing:
        raise MutationError(f"{path}'s tests {missing} are not in this checkout: update TARGETS in scripts/mutation.py")
    return TARGETS[path]


def copy_tree(dest: str) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), into ``dest``, keeping
    mutmut's cache there."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    if os.path.isdir(dest):
        for entry in os.listdir(dest):
            if entry not in (".mutmut-cache", TESTS_RECORD, LINES_RECORD):
                target = os.path.join(dest, entry)
                shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
    for name in filter(None, listed):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):  # a tracked file deleted in the working tree is left out
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, name))


SERVER_SOCKET = ".mutation-tests.sock"  # in each copy: where its test server listens
SERVER_LOG = ".mutation-tests.log"  # the output of the last forked test run (the unmutated one's, if it failed)
# third-party libraries the tests import, imported once by the server; none of the project's modules
PRELOAD = ("numpy", "torch", "torch.nn", "torch.distributions", "torch.optim", "gymnasium", "pytest", "yaml",
           "pyrallis", "tqdm", "h5py", "dsrl", "dsrl.offline_env", "osrl", "osrl.common.net", "osrl.algorithms")

# The runner mutmut starts per mutant: it asks the server to fork a pytest run and exits with the run's
# status. mutmut 2 counts only exit status 1 as killed, so a failing run (a mutant that breaks an import
# makes pytest exit with 2) is sent as 1, and a server that cannot be reached exits 3: survived, never a
# false kill. mutmut kills the runner at a timeout; the server then kills the forked run (its closed
# connection says so).
CLIENT = """import json, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    conn.connect(sys.argv[1])
    conn.sendall((json.dumps(sys.argv[2:]) + "\\n").encode())
    reply = conn.recv(1)
except OSError as err:
    print(f"mutation test server: {err}", file=sys.stderr)
    sys.exit(3)
sys.exit(reply[0] if reply else 3)
"""


def runner_command(tests: List[str]) -> str:
    # -x: the first failure kills the mutant; no cache provider: nothing written beside the tests
    return shlex.join([sys.executable, "-c", CLIENT, SERVER_SOCKET, "-x", "-q", "-p", "no:cacheprovider", *tests])


def serve(socket_path: str) -> None:
    """Run each request's pytest arguments in a forked process, one at a time, answering one byte:
    1 if the tests failed, 0 if they passed."""
    import importlib
    import select
    import signal
    import socket

    sys.path[0] = os.getcwd()  # the copy, as for ``python -c`` run there: never the repository's scripts/
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional library: the tests import it themselves, or skip
            pass
    import pytest

    if os.path.exists(socket_path):
        os.remove(socket_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        with conn:
            args = json.loads(conn.makefile().readline())
            pid = os.fork()
            if pid == 0:  # the test run: its own process group, so that a kill reaches what it started
                os.setpgid(0, 0)
                server.close()
                log = os.open(SERVER_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                try:
                    code = pytest.main(args)
                except BaseException:
                    code = 1
                sys.stdout.flush()
                os._exit(1 if code else 0)
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    conn.sendall(bytes([1 if os.waitstatus_to_exitcode(status) else 0]))
                    break
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and not conn.recv(1):  # mutmut killed the runner: a timeout
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    break


# mutmut 2.5.1's command line, with one fix: before testing, it looks each line's cached verdicts up by
# the line's text alone (cache.get_cached_mutation_statuses), so of two identical lines the second took
# the first one's verdict and, once that was "killed", was never tested again after a change to the
# tests. Here each mutant is looked up by its line's text and number.
MUTMUT = """import sys
from mutmut import cache
from mutmut.__main__ import climain


def statuses(filename, mutations, hash_of_tests):
    return {mutation_id: cache.cached_mutation_status(filename, mutation_id, hash_of_tests) for mutation_id in mutations}


cache.get_cached_mutation_statuses = statuses
sys.argv[0] = "mutmut"
climain()
"""


def mutmut_command(path: str, tests: List[str]) -> List[str]:
    return [sys.executable, "-c", MUTMUT, "run", "--paths-to-mutate", path, "--tests-dir", "tests", "--runner", runner_command(tests),
            "--disable-mutation-types", "string,fstring",
            # mutmut 2 stops a mutant's tests at 10x the unmutated run's time (a timeout); a killed
            # one that took over 2x + 60 s is "suspicious" (still killed): other processes on a
            # shared machine slow a run down by far more than the noise of one
            "--test-time-multiplier", "2", "--test-time-base", "60",
            "--simple-output", "--no-progress"]


def run_file(path: str, workdir: str, log: Optional[str] = None) -> None:
    """mutmut on ``path`` in its copy, its output to ``log`` (a file in the copy) or to this process's."""
    tests, dest = tests_for(path), os.path.join(workdir, slug(path))
    print(f"== {path}: mutants tested with {' '.join(tests)} in {dest}"
          + (f" (mutmut's output: {os.path.join(dest, log)})" if log else ""), flush=True)
    copy_tree(dest)
    with open(os.path.join(dest, TESTS_RECORD), "w") as f:  # what the report says the mutants ran against
        json.dump(tests, f)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    if os.path.exists(os.path.join(dest, SERVER_SOCKET)):  # a stale one would pass for the new server's
        os.remove(os.path.join(dest, SERVER_SOCKET))
    # the server's and mutmut's output: to the log, or to this process's (None)
    with open(os.path.join(dest, log), "w") if log else contextlib.nullcontext() as out:
        output = dict(stdout=out, stderr=subprocess.STDOUT if out else None)
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", SERVER_SOCKET], cwd=dest,
                                  env=env, **output)
        try:
            while not os.path.exists(os.path.join(dest, SERVER_SOCKET)):  # listening once its imports are done
                if server.poll() is not None:
                    raise MutationError(f"the mutation test server for {path} exited with status {server.returncode}")
                time.sleep(0.1)
            # exit status: a bit set per kind of surviving mutant; the report tells them apart
            code = subprocess.run(mutmut_command(path, tests), cwd=dest, env=env, **output).returncode
        finally:
            server.kill()
            server.wait()
    if code & 1:
        raise MutationError(f"mutmut failed on {path} (exit status {code}): do its tests pass unmutated? "
                            f"(their output: {os.path.join(dest, SERVER_LOG)})")
    print(f"== {path}: done", flush=True)


def run(paths: List[str], workdir: str, jobs: int = 1) -> None:
    """Each file in its own copy, so ``jobs`` files can be mutated at once (one core each); with more
    than one, each file's output goes to a log in its copy instead of interleaving here."""
    log = ".mutation-run.log" if jobs > 1 else None
    with ThreadPoolExecutor(jobs) as pool:
        for done in [pool.submit(run_file, path, workdir, log) for path in paths]:
            done.result()


def mutant_lines(source: str, line: str, index: int, line_number: int) -> Dict[str, object]:
    """The original and the mutated line of a mutant, and whether the mutated file compiles at all
    (mutmut 2 turns ``*args`` into ``/args``). Recomputed with mutmut's own mutator from the
    unmutated source: ``mutmut show`` would rewrite the cache's line numbers from the file on disk,
    which holds a mutant while a run is going on."""
    import mutmut

    context = mutmut.Context(source=source, mutation_id=mutmut.RelativeMutationID(line, index, line_number))
    mutated, _ = mutmut.mutate(context)
    try:
        compile(mutated, "<mutant>", "exec")
        compiles = True
    except SyntaxError:
        compiles = False
    before, after = source.split("\n"), mutated.split("\n")
    # the changed lines only: a deleted line (a decorator) must not make every line after it differ
    chunks = [op for op in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes() if op[0] != "equal"]
    return {"original": "\n".join(line.strip() for _, i1, i2, _, _ in chunks for line in before[i1:i2]),
            "mutant": "\n".join(line.strip() for _, _, _, j1, j2 in chunks for line in after[j1:j2]),
            "compiles": compiles}


def load_verdicts() -> List[dict]:
    if not os.path.isfile(SURVIVORS_TOML):
        return []
    with open(SURVIVORS_TOML, "rb") as f:
        entries = tomllib.load(f).get("survivor", [])
    for entry in entries:
        if entry.get("verdict") not in ("equivalent", "killed") or not entry.get("why" if entry.get("verdict") ==
                                                                                     "equivalent" else "test"):
            raise MutationError(f"{SURVIVORS_TOML}: each survivor needs verdict 'equivalent' with a 'why' or "
                                f"'killed' with a 'test', got {entry}")
    return entries


def file_report(path: str, dest: str, verdicts: List[dict]) -> dict:
    with open(os.path.join(dest, TESTS_RECORD)) as f:
        tests = json.load(f)
    db = sqlite3.connect(os.path.join(dest, ".mutmut-cache"))
    rows = db.execute("SELECT m.id, m.status, l.line_number, l.line, m.'index' FROM Mutant m JOIN Line l ON "
                      "m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id WHERE s.filename = ? "
                      "ORDER BY l.line_number, m.'index'", (path,)).fetchall()
    db.close()
    copied = os.path.join(dest, path)
    # while mutmut tests a mutant, the copy holds it and the original waits in <file>.bak
    with open(copied + ".bak" if os.path.isfile(copied + ".bak") else copied) as f:
        source = f.read()
    # each mutant's lines take a parse of the whole file: kept in the copy, keyed by the source they came from
    lines_cache = os.path.join(dest, LINES_RECORD)
    key = hashlib.sha256((source + inspect.getsource(mutant_lines)).encode()).hexdigest()
    cached = {}
    if os.path.isfile(lines_cache):
        with open(lines_cache) as f:
            saved = json.load(f)
        cached = saved["lines"] if saved.get("source") == key else {}
    mine = [entry for entry in verdicts if entry["file"] == path]
    counts = dict.fromkeys(("killed", "suspicious", "timeout", "survived", "skipped", "untested", "invalid"), 0)
    names = {KILLED: "killed", SUSPICIOUS: "suspicious", TIMEOUT: "timeout", SURVIVED: "survived",
             SKIPPED: "skipped", UNTESTED: "untested"}
    survivors, killed_by_new_tests, invalid = [], [], []
    for mutant_id, status, line_number, line, index in rows:
        slot = f"{line_number}:{index}:{line}"
        lines = cached[slot] = cached.get(slot) or mutant_lines(source, line, index, line_number)
        record = {"id": mutant_id, "line": line_number + 1, "original": lines["original"], "mutant": lines["mutant"]}
        if not lines["compiles"]:  # not a program: no test has anything to notice
            counts["invalid"] += 1
            invalid.append(record)
            continue
        counts[names[status]] += 1
        match = next((entry for entry in mine if (entry["original"], entry["mutant"]) ==
                      (lines["original"], lines["mutant"])), None)
        if status == KILLED and match is not None and match["verdict"] == "killed":
            killed_by_new_tests.append({**record, "test": match["test"]})
        elif status == SURVIVED:
            if match is not None and match["verdict"] == "equivalent":
                record["equivalent"] = match["why"]
            elif match is not None:
                record["unkilled_by"] = match["test"]  # listed as killed, but the last run let it live
            survivors.append(record)
    with open(lines_cache, "w") as f:
        json.dump({"source": key, "lines": cached}, f)
    equivalent = sum("equivalent" in record for record in survivors)
    detected = counts["killed"] + counts["suspicious"] + counts["timeout"]
    judged = detected + counts["survived"] - equivalent
    return {
        "file": path, "tests": tests, "mutmut": "mutmut 2.5.1, string and f-string mutants off",
        "mutants": len(rows), "counts": counts, "equivalent": equivalent,
        "score": round(detected / judged, 4) if judged else None,
        "complete": counts["untested"] == 0,
        "survivors": survivors, "killed_by_new_tests": killed_by_new_tests, "invalid": invalid,
    }


def shown(code: str) -> str:
    """A mutant's lines as inline code in one list item (a deleted line shows as nothing)."""
    return " ".join(f"`{line}`" for line in code.split("\n")) if code else "(deleted)"


def write_readme(reports: Dict[str, dict]) -> None:
    lines = ["# Mutation testing", "",
             "Generated by `python scripts/mutation.py report` from the runs of `make mutation` (mutmut 2.5.1: "
             "operators, comparisons, numbers, keywords, names and arguments changed one at a time; string "
             "mutants off). Each mutant ran against the fast tests listed in `scripts/mutation.py` (`TARGETS`). "
             "Score: (killed + timeout) / (killed + timeout + survived - equivalent), over the mutants tested; "
             "a mutant that does not compile (mutmut 2 turns `*args` into `/args`) is not a program and counts "
             "in none of them. Goal: at least 90% in every file.", "",
             "| file | mutants | not compiling | killed | timeout | survived | equivalent | untested | score |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path in TARGETS:
        report = reports.get(path)
        if report is None:
            lines.append(f"| `{path}` | not run | | | | | | | |")
            continue
        c = report["counts"]
        score = "" if report["score"] is None else f"{100 * report['score']:.1f}%"
        lines.append(f"| `{path}` | {report['mutants']} | {c['invalid']} | {c['killed'] + c['suspicious']} | {c['timeout']} | "
                     f"{c['survived']} | {report['equivalent']} | {c['untested']} | {score} |")
    unfinished = [path for path in TARGETS if path not in reports or not reports[path]["complete"]]
    if unfinished:  # a run continues where its cache stopped
        lines += ["", "Not run, or not to the end (hours on 2 cores): run or finish them with", "",
                  "    make mutation MUTATE=\"" + " ".join(unfinished) + "\"", ""]
    for path, report in reports.items():
        lines += ["", f"## `{path}`", "", "Tests: " + ", ".join(f"`{t}`" for t in report["tests"]) + "."]
        if not report["complete"]:
            lines.append(f"\nThe run stopped with {report['counts']['untested']} mutants untested.")
        if report["killed_by_new_tests"]:
            lines += ["", "Survivors of the first run, killed by tests added for them:", ""]
            lines += [f"- line {r['line']}: {shown(r['original'])} -> {shown(r['mutant'])}: `{r['test']}`"
                      for r in report["killed_by_new_tests"]]
        if report["survivors"]:
            lines += ["", "Surviving mutants:", ""]
            for r in report["survivors"]:
                why = r.get("equivalent") or (f"NOT KILLED: `{r['unkilled_by']}` was added for it, but the last run of "
                                              "this file let it live (rerun it)" if "unkilled_by" in r else "UNEXPLAINED")
                lines.append(f"- line {r['line']}: {shown(r['original'])} -> {shown(r['mutant'])}: {why}")
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def report(workdir: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    verdicts, reports = load_verdicts(), {}
    for path in TARGETS:
        dest, saved = os.path.join(workdir, slug(path)), os.path.join(RESULTS, f"{slug(path)}.json")
        if os.path.isfile(os.path.join(dest, ".mutmut-cache")):
            reports[path] = file_report(path, dest, verdicts)
            with open(saved, "w") as f:
                json.dump(reports[path], f, indent=1)
                f.write("\n")
        elif os.path.isfile(saved):  # measured before, on another machine or in an earlier session
            with open(saved) as f:
                reports[path] = json.load(f)
        else:
            continue
        c = reports[path]["counts"]
        print(f"{path}: {reports[path]['mutants']} mutants ({c['invalid']} not compiling), "
              f"{c['killed'] + c['suspicious']} killed, "
              f"{c['timeout']} timeout, {c['survived']} survived ({reports[path]['equivalent']} equivalent), "
              f"{c['untested']} untested; score {reports[path]['score']}")
    write_readme(reports)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("command", choices=("run", "report", "serve"),
                        help="run the mutants, or report the last run's (serve: the test server run starts)")
    parser.add_argument("files", nargs="*", help=f"files to mutate (default: all of {list(TARGETS)})")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="where the copies and mutmut's caches live")
    parser.add_argument("--jobs", type=int, default=1, help="files mutated at once, one core each")
    args = parser.parse_intermixed_args(argv)
    if args.command == "serve":
        return serve(args.files[0])
    try:
        unknown = [path for path in args.files if path not in TARGETS]
        if unknown:
            raise MutationError(f"no tests are mapped for {unknown}: choose from {list(TARGETS)}")
        if args.command == "run":
            if args.jobs < 1:
                raise MutationError(f"--jobs must be at least 1, got {args.jobs}")
            run(args.files or list(TARGETS), os.path.abspath(args.workdir), args.jobs)
        report(os.path.abspath(args.workdir))
    except MutationError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

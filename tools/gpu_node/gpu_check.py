"""The CUDA path on a real GPU, in one command with one report. On an offline GPU node it runs through
``gpu_bundle/run.sh`` (docs/gpu.md); where the project's .venv is installed, through gpu_check.sh:

    tools/gpu_node/gpu_check.sh [--out DIR] [--cpu] [--dataset FILE]

1. the test suite's CUDA-marked tests (``pytest -m cuda``) on the GPU;
2. ``bench_train.py --device cuda``, eager and with ``--compile`` (iterations/s, the ratio to the
   plain eager step, peak GPU memory);
3. ``bench_train.py --device cuda --seeds 1 8 32``, eager and with ``--compile``: LSPC's stacked step
   of 1, 8 and 32 seeds (per-seed iterations/s, the speed-up per seed over the single-seed step, each
   one's peak GPU memory);
4. ``bench_methods.py --device cuda``: all ten methods at their default batch sizes, step times,
   host syncs per step (CUDA's sync debug mode) before and after a checkpoint, peak GPU memory;
5. bit-exactness: each method trained twice from the same seed, with and without ``--deterministic``;
6. a real LSPC run of 20,000 steps on a BallRun file, SIGKILLed after its first checkpoint and resumed,
   then evaluated on the CPU by ``eval_lspc.py``.

The BallRun file is collected from the simulator, or given with ``--dataset``. Where the simulator is
not installed (the GPU node), what needs it is skipped and the report says so: the file must be given,
the CUDA tests that evaluate are skipped, the LSPC run trains with evaluation off (``--eval_every 0``)
and is evaluated after it comes back, on a machine with the simulator.

Writes ``report.json`` and ``report.md`` into DIR (default ``gpu_check/``), each step's log beside
them, and exits 1 if a step failed. Each step has a budget of seconds (``BUDGET_S``, under 8 minutes
in all on one H100, the bundle's install included); a step past its budget is stopped and reported as
failed, and the next one runs. ``--cpu`` runs the same steps on the CPU at toy sizes (the tests do, so
the script cannot rot); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools", "bench")]  # lspc, and the benchmarks
TASK = "OfflineBallRun-v0"

# Seconds each step may take on the GPU: with run.sh's own work (RUN_SH_S), the plan that keeps the node's
# one command within 8 minutes on one H100. Collecting data is not budgeted: the node has no simulator and
# uses the bundle's file. --cpu runs have no budget: toy sizes on a shared CPU.
# No GPU has run this check yet, so these are estimates. The stacked step (two processes, the second
# compiling three stacks) took its seconds from the others: bench_train times two rounds instead of three,
# and the tests, the determinism check and the LSPC run keep less slack than they had.
BUDGET_S = {"cuda_tests": 80, "bench_train": 80, "stacked": 90, "bench_methods": 60, "determinism": 50,
            "lspc_run": 95}
RUN_SH_S = {"wheel install": 20, "archives": 5}

# (GPU, --cpu) sizes of each step
SIZES = {
    "episodes": (100, 20),
    "bench_train": (["--rounds", "2", "--steps", "50"], ["--rounds", "1", "--steps", "3"]),
    "stacked": (["--seeds", "1", "8", "32", "--rounds", "2", "--steps", "20"],
                ["--seeds", "1", "8", "32", "--rounds", "1", "--steps", "2", "--batch_size", "32"]),
    "bench_methods": (["--steps", "20", "--warmup", "3"],
                      ["--steps", "1", "--warmup", "0", "--sync_steps", "1", "--batch_size", "64",
                       "--hparam", "cdt.augment_percent=0"]),
    "determinism_steps": (30, 2),
    "lspc_run": ([], ["--hidden_dim", "32", "--batch_size", "64", "--latent_dim", "8", "--log_every", "50"]),
    # with the simulator: evaluations during the run, the first one its first checkpoint; without it: none, and
    # time-based checkpoints, the run long enough (a toy CPU step takes about 2 ms) to be killed after one
    "lspc_eval": (["--max_timesteps", "20000", "--eval_every", "5000", "--eval_episodes", "5"],
                  ["--max_timesteps", "600", "--eval_every", "150", "--eval_episodes", "1"]),
    "lspc_no_eval": (["--max_timesteps", "20000", "--eval_every", "0", "--checkpoint_every_minutes", "0.2"],
                     ["--max_timesteps", "4000", "--eval_every", "0", "--checkpoint_every_minutes", "0.005"]),
}


def simulator_missing() -> str:
    """Why BallRun cannot be simulated here ('' where Bullet Safety Gym is installed)."""
    from lspc.envs import simulator_missing as missing

    return missing(TASK)


class StepTimeout(Exception):
    pass


class Report:
    def __init__(self, out: str, cpu: bool) -> None:
        self.out, self.cpu = out, cpu
        self.steps: Dict[str, Dict[str, Any]] = {}
        self.skipped: Dict[str, str] = {}  # what was not run, and why

    def size(self, name: str) -> Any:
        return SIZES[name][1 if self.cpu else 0]

    def step(self, name: str, fn: Callable[[], Dict[str, Any]], partial: Optional[Dict[str, Any]] = None) -> None:
        """Run one step within its budget; a failure is recorded, with what ``fn`` had put in ``partial``
        by then, and the next steps still run."""
        budget = None if self.cpu else BUDGET_S.get(name)

        def over_budget(signum, frame):
            raise StepTimeout(f"stopped after its budget of {budget} s")

        previous = signal.signal(signal.SIGALRM, over_budget)
        signal.alarm(budget or 0)  # a subprocess running when it fires is killed by subprocess.run
        start = time.perf_counter()
        try:
            result = {"ok": True, **fn()}
        except Exception as err:  # noqa: BLE001 (the report says what broke, then the rest runs)
            result = {"ok": False, "error": f"{type(err).__name__}: {err}", **(partial or {})}
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        result["budget_s"] = budget
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.steps[name] = result
        print(f"gpu_check: {name}: {'ok' if result['ok'] else 'FAILED: ' + result['error']} "
              f"({result['seconds']} s)", flush=True)
        self.write()

    def skip(self, name: str, why: str) -> None:
        self.skipped[name] = why
        print(f"gpu_check: {name}: skipped ({why})", flush=True)
        self.write()

    def run(self, name: str, cmd: List[str], check: bool = True, env: Optional[Dict[str, str]] = None) -> str:
        """Run ``cmd`` (stdout and stderr into <out>/<name>.log); returns its stdout."""
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
        with open(os.path.join(self.out, f"{name}.log"), "a") as log:
            log.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
        if check and proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{os.path.basename(cmd[1]) if len(cmd) > 1 else cmd[0]} exited with "
                               f"{proc.returncode}: {tail}")
        return proc.stdout

    def write(self) -> None:
        import torch

        device = "cpu (--cpu dry run)" if self.cpu else torch.cuda.get_device_name(0)
        report = {"device": device, "torch": torch.__version__, "python": sys.version.split()[0],
                  "steps": self.steps, "skipped": self.skipped}
        with open(os.path.join(self.out, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(self.out, "report.md"), "w") as f:
            f.write(markdown(report))


def markdown(report: Dict[str, Any]) -> str:
    steps = report["steps"]
    lines = [f"# GPU check: {report['device']}, torch {report['torch']}, Python {report['python']}", "",
             "| step | result | seconds | budget (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {'ok' if s['ok'] else 'FAILED: ' + s['error']} | {s['seconds']} | {s['budget_s'] or '-'} |"
              for name, s in steps.items()]
    if report["skipped"]:
        lines += ["", "| skipped | why |", "|---|---|"]
        lines += [f"| {name} | {why} |" for name, why in report["skipped"].items()]
    if steps.get("bench_train", {}).get("ok"):
        lines += ["", "| bench_train | ours it/s | plain it/s | ratio | peak GPU MB |", "|---|---|---|---|---|"]
        for mode, row in steps["bench_train"]["runs"].items():
            lines.append(f"| {mode} | {row['ours_it_per_s']} | {row['plain_it_per_s']} | {row['ratio']} | "
                         f"{row.get('peak_gpu_memory_mb', '')} |")
    if steps.get("stacked", {}).get("runs"):  # also what a step stopped at its budget had measured
        lines += ["", "| stacked | seeds | batch | per-seed it/s | single-seed it/s | speed-up per seed | "
                      "peak GPU MB | single-seed peak GPU MB |", "|---|---|---|---|---|---|---|---|"]
        for mode, rows in steps["stacked"]["runs"].items():
            lines += [f"| {mode} | {row['seeds']} | {row['batch_size']} | {row['per_seed_it_per_s']} | "
                      f"{row['single_it_per_s']} | {row['speedup_per_seed']} | {row.get('peak_gpu_memory_mb', '')} | "
                      f"{row.get('single_peak_gpu_memory_mb', '')} |" for row in rows]
    if steps.get("bench_methods", {}).get("ok"):
        lines += ["", "| method | batch | ms / step | host syncs / step | after a resume | peak GPU MB |",
                  "|---|---|---|---|---|---|"]
        for row in steps["bench_methods"]["rows"]:
            lines.append(f"| {row['method']} | {row['batch_size']} | {row['wall_ms_per_step']:.2f} | "
                         f"{row['syncs_per_step']:g} | {row['after_resume']:g} | {row.get('peak_gpu_memory_mb', '')} |")
    if steps.get("determinism", {}).get("ok"):
        lines += ["", "| method | bit-exact | bit-exact with --deterministic |", "|---|---|---|"]
        for method, row in steps["determinism"]["methods"].items():
            lines.append(f"| {method} | {row['default']} | {row['deterministic']} |")
    run = steps.get("lspc_run", {})
    if run.get("ok"):
        lines += ["", f"LSPC run: killed at step {run['killed_at_step']}, resumed to step {run['final_step']}; "
                      f"train {run['train_seconds']} s + resume {run['resume_seconds']} s "
                      f"({run['steps_per_s']} steps/s after the resume); peak GPU memory {run['peak_gpu_memory_mb']} MB; "
                      f"evaluated on the CPU: {run.get('cpu_eval', 'later, where the simulator is installed')}"]
    return "\n".join(lines) + "\n"


def cuda_tests(report: Report, dataset: str) -> Dict[str, Any]:
    """Without the simulator the tests' BallRun data comes from ``dataset``, and tests that evaluate skip."""
    out = report.run("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider",
                                    "tests"], check=False, env={"LSPC_TEST_BALLRUN": dataset})
    summary = [line for line in out.splitlines() if " passed" in line or " failed" in line or " skipped" in line
               or " deselected" in line]
    if not summary or " failed" in summary[-1] or " error" in summary[-1]:
        raise RuntimeError(summary[-1] if summary else "pytest printed no summary")
    # pytest -rs: "SKIPPED [n] tests/file.py:line: reason"
    skipped = [f"{m.group(2)} ({m.group(1)} tests): {m.group(3)}"
               for m in re.finditer(r"^SKIPPED \[(\d+)\] (\S+?):\d+: (.*)$", out, re.MULTILINE)]
    return {"summary": summary[-1], "skipped": skipped}


def collect(report: Report, path: str) -> Dict[str, Any]:
    report.run("collect", [sys.executable, "scripts/collect_dataset.py", "--task", TASK, "--episodes",
                           str(report.size("episodes")), "--seed", "0", "--out", path])
    return {"dataset": path, "episodes": report.size("episodes")}


def bench_train(report: Report, device: str) -> Dict[str, Any]:
    runs = {}
    for mode, extra in (("eager", []), ("compile", ["--compile"])):
        if report.cpu and mode == "compile":  # compiling for the CPU takes minutes; the GPU run tests it
            continue
        out = report.run("bench_train", [sys.executable, "tools/bench/bench_train.py", "--device", device,
                                         *report.size("bench_train"), *extra])
        runs[mode] = json.loads(out.strip().splitlines()[-1])
    return {"runs": runs}


def stacked(report: Report, device: str, runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """LSPC's stacked seeds, eager then compiled, each mode's rows into ``runs`` as soon as they are measured."""
    for mode, extra in (("eager", []), ("compile", ["--compile"])):
        if report.cpu and mode == "compile":  # as in bench_train: compiling for the CPU takes minutes
            continue
        out = report.run("stacked", [sys.executable, "tools/bench/bench_train.py", "--device", device,
                                     *report.size("stacked"), *extra])
        runs[mode] = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    return {"runs": runs}


def bench_methods(report: Report, device: str, dataset: str) -> Dict[str, Any]:
    rows_path = os.path.join(report.out, "bench_methods.json")
    report.run("bench_methods", [sys.executable, "tools/bench/bench_methods.py", "--dataset_path", dataset,
                                 "--device", device, "--json", rows_path, *report.size("bench_methods")])
    with open(rows_path) as f:
        return {"rows": json.load(f)}


def determinism(report: Report, device: str, dataset: str) -> Dict[str, Any]:
    """Each method twice from seed 0, with and without deterministic algorithms: bit-exact or not."""
    import torch

    from bench_methods import METHODS, build, method_for
    from lspc.training import use_deterministic_algorithms

    batch_size, hparams = (64, {"cdt": {"augment_percent": 0}}) if report.cpu else (None, {})
    results = {}
    for name in METHODS:
        row = {}
        for mode in ("default", "deterministic"):
            digests = []
            for _ in range(2):
                if mode == "deterministic":
                    use_deterministic_algorithms()
                try:
                    method = method_for(name, TASK, dataset, device, batch_size, hparams.get(name))
                    env, _, sampler, agent = build(method)
                    for _ in range(report.size("determinism_steps")):
                        agent.train(sampler.sample(method.cfg.batch_size))
                    digests.append(state_digest(agent.state_dict()))
                    env.close()
                finally:
                    torch.use_deterministic_algorithms(False)
            row[mode] = "yes" if digests[0] == digests[1] else "no"
        results[name] = row
    with open(os.path.join(report.out, "determinism.csv"), "w") as f:
        f.write(f"# command: tools/gpu_node/gpu_check.sh{' --cpu' if report.cpu else ''} (its determinism step; "
                f"this file is gpu_check/determinism.csv)\n# what: each method trained twice from seed 0 for "
                f"{report.size('determinism_steps')} steps on {device}, parameters and optimizer states compared bit "
                "for bit\nmethod,bit-exact,bit-exact with --deterministic\n")
        f.writelines(f"{name},{row['default']},{row['deterministic']}\n" for name, row in results.items())
    return {"methods": results, "steps": report.size("determinism_steps")}


def state_digest(state: Any) -> str:
    """A hash of every tensor and value in a (nested) state dict."""
    import torch

    digest = hashlib.sha256()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(str(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    visit(state)
    return digest.hexdigest()


def final_step(train: List[str]) -> int:
    return int(train[train.index("--max_timesteps") + 1])


def lspc_run(report: Report, device: str, dataset: str) -> Dict[str, Any]:
    """Train, SIGKILL after the first checkpoint, resume to the end, evaluate on the CPU (where the
    simulator is installed: else the run directory goes back for that)."""
    from lspc.checkpoint import load_checkpoint

    logdir = os.path.join(report.out, "runs")
    run_dir = os.path.join(logdir, "gpu-check", "lspc")
    train = [sys.executable, "train_lspc_iql.py", "--task", TASK, "--dataset_path", dataset, "--device", device,
             "--logdir", logdir, "--group", "gpu-check", "--name", "lspc", "--wandb_mode", "disabled",
             *report.size("lspc_run"), *report.size("lspc_no_eval" if simulator_missing() else "lspc_eval")]
    latest = os.path.join(run_dir, "checkpoint", "model.pt")
    start = time.perf_counter()
    with open(os.path.join(report.out, "lspc_run.log"), "a") as log:
        with subprocess.Popen(train, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) as proc:
            try:
                while not os.path.exists(latest):
                    if proc.poll() is not None:
                        raise RuntimeError(f"training exited with {proc.returncode} before its first checkpoint")
                    time.sleep(0.2)
                time.sleep(0.5)  # into the next stretch of steps
                if proc.poll() is not None:
                    raise RuntimeError("training ended before it could be killed: give it more steps after its "
                                       "first checkpoint")
            finally:  # the planned SIGKILL, or the step's budget ran out meanwhile
                proc.kill()
    train_seconds = time.perf_counter() - start
    killed_at = int(load_checkpoint(latest)["step"])
    if killed_at >= final_step(train):
        raise RuntimeError(f"training reached its last step ({killed_at}) before it was killed: give it more steps "
                           "after its first checkpoint")
    start = time.perf_counter()
    report.run("lspc_run", [sys.executable, "train_lspc_iql.py", "--resume", run_dir])
    resume_seconds = time.perf_counter() - start
    final = load_checkpoint(latest)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    peak = max((row.get("gpu/peak_memory_mb", 0.0) for row in rows), default=0.0)
    rates = [row["time/train_steps_per_s"] for row in rows if "time/train_steps_per_s" in row]
    result = {"run_dir": os.path.relpath(run_dir, report.out), "killed_at_step": killed_at,
              "final_step": int(final["step"]), "train_seconds": round(train_seconds, 1),
              "resume_seconds": round(resume_seconds, 1), "steps_per_s": round(rates[-1], 1) if rates else None,
              "peak_gpu_memory_mb": round(peak, 1)}
    if simulator_missing():
        report.skip("lspc_eval", simulator_missing())  # it says where the returned run is evaluated
        return result
    report.run("lspc_eval", [sys.executable, "eval_lspc.py", "--path", run_dir, "--device", "cpu", "--eval_episodes",
                             "2", "--no_figures"])
    with open(os.path.join(run_dir, "eval", "results.json")) as f:
        results = json.load(f)
    scores = {name: {k: round(v, 3) for k, v in policy["thresholds"][min(policy["thresholds"], key=float)].items()
                     if k in ("normalized_reward", "normalized_cost")}
              for name, policy in results["policies"].items()}
    return {**result, "cpu_eval": scores}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check", help="the report's directory (default: gpu_check/)")
    parser.add_argument("--cpu", action="store_true", help="a dry run on the CPU at toy sizes (the tests' check)")
    parser.add_argument("--dataset", help="a BallRun hdf5 file to train on instead of collecting one (needed where "
                                          "the simulator is not installed)")
    args = parser.parse_args(argv)
    if args.cpu:  # toy networks on a shared CPU: more threads only contend (here and in every step's process)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run with --cpu for a dry run", file=sys.stderr)
        return 2
    if args.dataset is None and simulator_missing():
        print(f"error: no BallRun data can be collected here ({simulator_missing()}); pass --dataset FILE",
              file=sys.stderr)
        return 2
    if args.dataset is not None and not os.path.isfile(args.dataset):
        print(f"error: --dataset {args.dataset} does not exist", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    device = "cpu" if args.cpu else "cuda"
    report = Report(os.path.abspath(args.out), args.cpu)
    dataset = os.path.abspath(args.dataset or os.path.join(report.out, "ballrun.hdf5"))
    if args.dataset is None:
        report.step("collect", lambda: collect(report, dataset))
    else:
        report.skip("collect", f"the dataset was given: {args.dataset}")
    report.step("cuda_tests", lambda: cuda_tests(report, dataset))
    report.step("bench_train", lambda: bench_train(report, device))
    stacked_runs: Dict[str, List[Dict[str, Any]]] = {}
    report.step("stacked", lambda: stacked(report, device, stacked_runs), partial={"runs": stacked_runs})
    report.step("bench_methods", lambda: bench_methods(report, device, dataset))
    report.step("determinism", lambda: determinism(report, device, dataset))
    report.step("lspc_run", lambda: lspc_run(report, device, dataset))
    print(f"gpu_check: report in {os.path.join(report.out, 'report.md')}")
    return 0 if all(step["ok"] for step in report.steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

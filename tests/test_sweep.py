"""scripts/sweep.py (protocol sweeps with submitit), its suite wrappers, and make_table's per-method
threshold logic. The miniature sweep trains for real: one task, two seeds, LSPC and BC-All."""
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import cloudpickle
import pytest

from conftest import ROOT, load_script
from lspc.envs import SUITES

TASK = "OfflineBallRun-v0"
METHODS = ["lspc", "bc-all"]
SEEDS = [0, 1]
RUN_NAMES = {"lspc": "lspc_iql", "bc-all": "bc-all"}
POLICIES = {"lspc": {"lspc-o", "lspc-s", "cvae"}, "bc-all": {"bc-all"}}
# a few seconds a run: 100 steps, small networks, 2 evaluation episodes, no figures
SMALL = {"lspc": "lspc=--hidden_dim 32 --latent_dim 8 --batch_size 64 --wandb_mode disabled --device cpu",
         "bc-all": "bc-all=--hidden_dim 32 --batch_size 64 --wandb_mode disabled --device cpu"}


def sweep_cmd(logdir, dataset_dir, *more, methods=METHODS):
    return [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), "--executor", "local", "--tasks", TASK,
            "--seeds", *map(str, SEEDS), "--methods", *methods, "--logdir", str(logdir),
            "--dataset_dir", str(dataset_dir), "--jobs", "2", "--max_timesteps", "100", "--eval_every", "100",
            "--eval_episodes", "2", "--eval_extra=--no_figures",
            *[token for m in methods if m in SMALL for token in ("--method_extra", SMALL[m])], *more]


def run_sweep(cmd):
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return result, time.perf_counter() - start


def most_jobs_at_once(submitit_dir):
    """From the submitit logs' start and end times, the most jobs that ran at the same time."""
    events = []
    for name in os.listdir(submitit_dir):
        if name.endswith("_log.out"):
            with open(os.path.join(submitit_dir, name)) as f:
                stamps = [line.split("(")[1].split(")")[0] for line in f if line.startswith("submitit INFO (")]
            events += [(stamps[0], 1), (stamps[-1], -1)]
    running = [0]
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        running.append(running[-1] + change)
    return max(running)


def run_dir(logdir, method, seed, kappa=10):
    return os.path.join(logdir, f"{TASK}-cost-{kappa}", f"{RUN_NAMES[method]}-seed{seed}")


def mtimes(logdir):
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, files in os.walk(logdir) for name in files if "submitit" not in root}


@pytest.fixture(scope="module")
def dataset_dir(ballrun_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("datasets")
    shutil.copy(ballrun_file, path / f"{TASK}.hdf5")
    return path


@pytest.fixture(scope="module")
def sweep(dataset_dir, tmp_path_factory):
    """The miniature sweep, once: 2 methods x 2 seeds, at most 2 jobs at once."""
    logdir = tmp_path_factory.mktemp("sweep") / "sweep"
    result, elapsed = run_sweep(sweep_cmd(logdir, dataset_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    return logdir, result, elapsed


def test_sweep_trains_evaluates_and_tabulates(sweep):
    logdir, result, _ = sweep
    assert "4 runs, 0 already done (skipped), 4 to run (local, at most 2 at once)" in result.stdout
    assert result.stdout.count("finished ") == 4 and "FAILED" not in result.stdout
    assert most_jobs_at_once(os.path.join(logdir, "submitit")) == 2  # --jobs 2: never all four at once
    cells = {}
    for method in METHODS:
        for seed in SEEDS:
            run = run_dir(logdir, method, seed)
            for name in ("config.yaml", "metrics.jsonl", os.path.join("checkpoint", "model.pt")):
                assert os.path.isfile(os.path.join(run, name)), (run, name)
            with open(os.path.join(run, "eval", "results.json")) as f:
                results = json.load(f)
            assert (results["task"], results["train_seed"], results["episodes"]) == (TASK, seed, 2)
            assert set(results["policies"]) == POLICIES[method]
            for policy, entry in results["policies"].items():
                assert sorted(map(float, entry["thresholds"])) == [10.0, 20.0, 40.0]  # one run, every threshold
                cells.setdefault(policy, []).extend(entry["thresholds"].values())
    with open(os.path.join(logdir, "table.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert (row["task"], row["runs"], row["seeds"], row["thresholds"]) == (TASK, "4", "2", "10 20 40")
    for policy, scores in cells.items():  # each cell: the mean over 2 seeds x 3 thresholds
        assert len(scores) == 6
        for what in ("reward", "cost"):
            expected = sum(s[f"normalized_{what}"] for s in scores) / 6
            assert float(row[f"{policy}_normalized_{what}"]) == pytest.approx(expected, abs=1e-12)
    with open(os.path.join(logdir, "table.md")) as f:
        table = f.read()
    assert table.splitlines()[0].startswith(  # the paper's order: baselines, LSPC-S, LSPC-O; the ablation last
        "| task | BC-All reward ↑ | BC-All cost ↓ | LSPC-S reward ↑ | LSPC-S cost ↓ "
        "| LSPC-O reward ↑ | LSPC-O cost ↓ | CVAE reward ↑")
    assert os.path.getsize(os.path.join(logdir, "table.png")) > 0
    assert "mean over 2 seeds × the thresholds κ (bullet: 10, 20, 40)" in table
    assert "wrote " + os.path.join(str(logdir), "table.md") in result.stdout


def test_second_sweep_skips_everything(sweep, dataset_dir):
    logdir, _, first = sweep
    before = mtimes(logdir)
    jobs_before = sorted(os.listdir(os.path.join(logdir, "submitit")))
    result, elapsed = run_sweep(sweep_cmd(logdir, dataset_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 runs, 4 already done (skipped), 0 to run" in result.stdout and result.stdout.count("skipped  ") == 4
    changed = {path for path, mtime in mtimes(logdir).items() if before.get(path) != mtime}
    # nothing retrained: only the table is written again
    assert changed == {os.path.join(str(logdir), name) for name in ("table.md", "table.csv", "table.png")}
    assert sorted(os.listdir(os.path.join(logdir, "submitit"))) == jobs_before  # nothing submitted
    assert elapsed < first / 2, (elapsed, first)


def test_failed_run_is_reported_and_the_others_go_on(sweep, dataset_dir, tmp_path):
    logdir = tmp_path / "sweep"
    shutil.copytree(sweep[0], logdir, ignore=shutil.ignore_patterns("submitit"))  # copy2: mtimes kept
    with open(os.path.join(run_dir(logdir, "lspc", 1), "checkpoint", "model.pt"), "wb") as f:
        f.write(b"not a checkpoint")  # looks interrupted: the job resumes it, and the resume fails
    shutil.rmtree(os.path.join(run_dir(logdir, "lspc", 0), "eval"))  # needs evaluating only
    result, _ = run_sweep(sweep_cmd(logdir, dataset_dir, methods=["lspc"]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 runs, 0 already done (skipped), 2 to run" in result.stdout
    assert f"finished {TASK} lspc seed 0 " in result.stdout and "(evaluated)" in result.stdout
    assert os.path.isfile(os.path.join(run_dir(logdir, "lspc", 0), "eval", "results.json"))
    failed = [line for line in result.stderr.splitlines() if line.startswith(f"failed: {TASK} lspc seed 1: ")]
    assert len(failed) == 1 and "train_lspc_iql.py exited with status 2" in failed[0], result.stderr
    log = failed[0].split("log: ")[1]
    with open(log) as f:
        assert "could not load checkpoint" in f.read()  # the training script's own error, in the job's log
    assert "sweep: 0 skipped, 1 ran, 1 failed" in result.stdout
    assert os.path.isfile(os.path.join(logdir, "table.md"))  # the table is still made


def test_dry_run_plans_resume_evaluate_and_restart(sweep, dataset_dir, tmp_path, capsys):
    logdir = tmp_path / "sweep"
    shutil.copytree(sweep[0], logdir, ignore=shutil.ignore_patterns("submitit"))
    os.utime(os.path.join(run_dir(logdir, "bc-all", 0), "checkpoint", "model.pt"))  # newer than its results
    shutil.rmtree(os.path.join(run_dir(logdir, "bc-all", 1), "checkpoint"))  # a run that never saved one
    before = mtimes(logdir)
    load_script("sweep").main(sweep_cmd(logdir, dataset_dir, "--dry_run")[2:])
    out = capsys.readouterr().out
    for method, seed, status in (("lspc", 0, "done"), ("lspc", 1, "done"), ("bc-all", 0, "evaluate"),
                                 ("bc-all", 1, "restart")):
        assert f"# {TASK} {method} seed {seed}: {status} ({run_dir(logdir, method, seed)})" in out
    assert "dry run: 2 of 4 runs to submit" in out and mtimes(logdir) == before
    load_script("sweep").main(sweep_cmd(logdir, dataset_dir, "--dry_run", "--max_timesteps", "200")[2:])
    out = capsys.readouterr().out
    resumes = [line for line in out.splitlines() if "--resume" in line]
    assert len(resumes) == 3 and all("--max_timesteps 200" in line for line in resumes)  # longer: resumed
    assert resumes[0].endswith(f"--resume {run_dir(logdir, 'lspc', 0)}")


def test_dry_run_prints_the_commands_and_runs_nothing(dataset_dir, tmp_path, capsys):
    logdir = tmp_path / "sweep"
    load_script("sweep").main(sweep_cmd(logdir, dataset_dir, "--dry_run", "--threads_per_job", "3",
                                        methods=["lspc", "bc-safe"])[2:])
    assert not logdir.exists()
    lines = capsys.readouterr().out.splitlines()
    train = [line for line in lines if "train_lspc_iql.py" in line]
    baseline = [line for line in lines if "train_baseline.py" in line]
    evaluate = [line for line in lines if "eval_lspc.py" in line]
    assert len(train) == 2 and len(baseline) == 6 and len(evaluate) == 8  # bc-safe: one run per threshold
    assert all(line.startswith("OMP_NUM_THREADS=3 MKL_NUM_THREADS=3 ") for line in train + baseline + evaluate)
    assert all(f"--dataset_path {dataset_dir}/{TASK}.hdf5" in line for line in train + baseline)
    assert sum(f"--algo bc-safe --task {TASK} --seed 1 --cost_limit {k} " in line
               for line in baseline for k in (10, 20, 40)) == 3
    assert f"# {TASK} bc-safe seed 0 κ=40: train ({logdir}/{TASK}-cost-40/bc-safe-seed0)" in lines
    assert "dry run: 8 of 8 runs to submit (local, at most 2 at once)" in lines[-1]


@pytest.mark.parametrize("change, expected", [
    (("--tasks", "OfflineNoSuchTask-v0"), "unknown task 'OfflineNoSuchTask-v0'"),
    (("--methods", "sac"), "unknown method 'sac'"),
    (("--dataset_dir", "{empty}"), "no dataset file {empty}/OfflineBallRun-v0.hdf5"),
    (("--method_extra", "sac=--x 1"), "--method_extra takes METHOD=ARGS"),
    (("--seeds", "-1"), "seeds must be >= 0"),
    (("--jobs", "0"), "--jobs must be >= 1"),
])
def test_bad_input_exits_2_before_submitting(dataset_dir, tmp_path, capsys, change, expected):
    sweep = load_script("sweep")
    logdir, empty = tmp_path / "sweep", tmp_path / "empty"
    empty.mkdir()
    argv = sweep_cmd(logdir, dataset_dir)[2:]
    flag, value = change
    argv[argv.index(flag) + 1] = value.format(empty=empty)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected.format(empty=empty) in err, err
    assert not logdir.exists()


def test_suite_wrappers_forward_environment_and_arguments(tmp_path):
    result = subprocess.run([os.path.join(ROOT, "scripts", "run_metadrive.sh"), "--dry_run", "--jobs", "5"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SEEDS": "3", "METHODS": "lspc", "EXTRA": "--batch_size 32",
                                 "LOGDIR": str(tmp_path / "md"), "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    train = [line for line in result.stdout.splitlines() if "train_lspc_iql.py" in line]
    assert len(train) == 9 and all("--seed 3 " in line and line.endswith("--batch_size 32 --name lspc_iql-seed3")
                                   for line in train)  # the sweep names its runs itself
    assert {line.split("--task ")[1].split()[0] for line in train} == {
        f"OfflineMetadrive-{road}{density}-v0" for road in ("easy", "medium", "hard")
        for density in ("sparse", "mean", "dense")}
    assert "at most 5 at once" in result.stdout and str(tmp_path / "md") in result.stdout


@pytest.mark.parametrize("stack, jobs", [(False, 16), (True, 8)])
def test_slurm_submits_one_bounded_array(tmp_path, monkeypatch, capsys, stack, jobs):
    """With stand-ins for srun and sbatch: the sbatch script is a job array of every run (with --stack_seeds, of
    every task's stack of seeds), at most --jobs at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    for name in ("srun", "sbatch"):
        os.chmod(bin_dir / name, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # the sweep sets it for its jobs
    logdir = tmp_path / "sweep"
    argv = ["--executor", "slurm", "--suite", "bullet", "--seeds", "0", "1", "--methods", "lspc",
            "--logdir", str(logdir), "--jobs", "3", "--slurm_partition", "gpu", "--slurm_gpus_per_job", "1",
            "--slurm_cpus_per_job", "4", "--slurm_time_min", "120", "--no_wait", *(["--stack_seeds"] if stack else [])]
    sweep = load_script("sweep")
    sweep.main(argv)
    assert f"submitted Slurm array 4242 ({jobs} jobs, at most 3 at once)" in capsys.readouterr().out
    script = (tmp_path / "submitted.sh").read_text()
    for line in (f"--array=0-{jobs - 1}%3", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--time=120"):
        assert f"#SBATCH {line}\n" in script
    pickles = [name for name in os.listdir(logdir / "submitit") if name.endswith("_submitted.pkl")]
    assert len(pickles) == jobs
    submitted = []
    for name in pickles:  # what each array job runs
        with open(logdir / "submitit" / name, "rb") as f:
            (job,) = cloudpickle.load(f).args
        submitted.append((job.runs[0].task, tuple(run.seed for run in job.runs), shlex.join(job.train_cmd)))
    assert sorted(task for task, *_ in submitted) == sorted(SUITES["bullet"] * (1 if stack else 2))
    for task, seeds, train in submitted:
        if stack:
            assert seeds == (0, 1) and train.endswith("--name lspc_iql --seeds 0 1"), train
        else:
            assert len(seeds) == 1 and train.endswith(f"--name lspc_iql-seed{seeds[0]}"), train
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no Slurm here: one error line
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --executor slurm needs a Slurm cluster (no srun on PATH)\n"


# ---------------------------------------------------------------------------------------------
# make_table: per-threshold baselines beside threshold-agnostic methods
# ---------------------------------------------------------------------------------------------
def write_results(root, method_dir, seed, policies):
    """results.json as eval_lspc.py writes it; policies: name -> {kappa: (normalized reward, cost)}."""
    run = os.path.join(root, method_dir.format(seed=seed))
    os.makedirs(os.path.join(run, "eval"))
    with open(os.path.join(run, "eval", "results.json"), "w") as f:
        json.dump({"task": TASK, "run": run, "train_seed": seed, "policies": {
            name: {"thresholds": {f"{k:g}": {"normalized_reward": r, "normalized_cost": c}
                                  for k, (r, c) in scores.items()}} for name, scores in policies.items()}}, f)


def write_protocol(root, skip=()):
    """LSPC and BC-All: one run per seed at every threshold; BC-Safe and CPQ: one run per seed and threshold."""
    for seed in (0, 1):
        write_results(root, "cost-10/lspc_iql-seed{seed}", seed, {
            "lspc-o": {10: (0.5 + seed, 2.0), 20: (0.5 + seed, 1.0), 40: (0.5 + seed, 0.5)},
            "lspc-s": {10: (0.2, 0.4 + seed), 20: (0.2, 0.2), 40: (0.2, 0.1)},
            "cvae": {10: (0.1, 0.0), 20: (0.1, 0.0), 40: (0.1, 0.0)}})
        write_results(root, "cost-10/bc-all-seed{seed}", seed,
                      {"bc-all": {10: (0.6, 3.0), 20: (0.6, 1.5), 40: (0.6, 0.75)}})
        write_results(root, "cost-10/my-algo-seed{seed}", seed, {"my-algo": {k: (0.0, 0.0) for k in (10, 20, 40)}})
        for kappa in (10, 20, 40):
            if ("bc-safe", seed, kappa) not in skip:
                write_results(root, f"cost-{kappa}/bc-safe-seed{{seed}}", seed,
                              {"bc-safe": {kappa: (kappa / 100 + seed, 0.5)}})
            write_results(root, f"cost-{kappa}/cpq-seed{{seed}}", seed, {"cpq": {kappa: (0.3, kappa / 10)}})


def test_make_table_per_threshold_baselines(tmp_path, capsys):
    make_table = load_script("make_table")
    write_protocol(tmp_path)
    out = str(tmp_path / "table")
    make_table.main([str(tmp_path), "--out", out])
    with open(out + ".csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["runs"], row["seeds"], row["thresholds"]) == (str(2 * 3 + 2 * 3 * 2), "2", "10 20 40")
    expected = {"lspc-o": (1.0, 3.5 / 3), "lspc-s": (0.2, 2.4 / 6), "bc-all": (0.6, 1.75),
                "bc-safe": ((0.7 + 3.7) / 6, 0.5), "cpq": (0.3, 7.0 / 3), "cvae": (0.1, 0.0), "my-algo": (0.0, 0.0)}
    for method, (reward, cost) in expected.items():  # every cell: 2 seeds x 3 thresholds, per-threshold runs or not
        assert float(row[f"{method}_normalized_reward"]) == pytest.approx(reward, abs=1e-12), method
        assert float(row[f"{method}_normalized_cost"]) == pytest.approx(cost, abs=1e-12), method
    assert row["best_safe"] == "bc-safe"
    markdown = open(out + ".md").read()
    header = markdown.splitlines()[0]
    order = ["BC-All", "BC-Safe", "CPQ", "LSPC-S", "LSPC-O", "CVAE", "MY-ALGO"]
    positions = [header.index(f"| {name} reward") for name in order]
    assert positions == sorted(positions)
    note = markdown.splitlines()[-1]
    assert note.startswith("Each cell: mean over 2 seeds × the thresholds κ (bullet: 10, 20, 40). ")
    assert "BC-All, LSPC-S, LSPC-O, CVAE, MY-ALGO: one model per seed, scored at every threshold" in note
    assert "BC-Safe, CPQ: trained once per threshold and scored at that κ only (BC-Safe on the trajectories " \
           "with cost return <= κ" in note
    capsys.readouterr()


@pytest.mark.parametrize("breaks, expected", [
    (dict(duplicate=True), "lspc-o of OfflineBallRun-v0, seed 0, was scored at 10 by two runs"),
])
def test_make_table_names_duplicate_runs(tmp_path, capsys, breaks, expected):
    """(A missing run is shown, not refused: tests/test_make_table.py.)"""
    make_table = load_script("make_table")
    write_protocol(tmp_path, skip=breaks.get("skip", ()))
    if breaks.get("duplicate"):
        write_results(tmp_path, "other-sweep/lspc_iql-seed{seed}", 0, {"lspc-o": {10: (0.5, 2.0)}})
    with pytest.raises(SystemExit) as exit_info:
        make_table.main([str(tmp_path), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert expected in err, err
    assert not os.path.exists(tmp_path / "t.md")


# ---------------------------------------------------------------------------------------------
# --stack_seeds: one LSPC job per (task, threshold) trains its seeds as one stacked model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stacked_sweep(dataset_dir, tmp_path_factory):
    """The miniature sweep of LSPC with its two seeds stacked: one job."""
    logdir = tmp_path_factory.mktemp("stacked") / "sweep"
    result, _ = run_sweep(sweep_cmd(logdir, dataset_dir, "--stack_seeds", methods=["lspc"]))
    assert result.returncode == 0, result.stdout + result.stderr
    return logdir, result


def test_stacked_sweep_trains_the_seeds_in_one_job_into_ordinary_runs(stacked_sweep, dataset_dir):
    logdir, result = stacked_sweep
    assert "2 runs, 0 already done (skipped), 2 to run in 1 jobs (local, at most 1 at once)" in result.stdout
    assert result.stdout.count("started  ") == 1 and f"finished {TASK} lspc seeds 0 1 " in result.stdout
    (log,) = [name for name in os.listdir(os.path.join(logdir, "submitit")) if name.endswith("_log.out")]
    with open(os.path.join(logdir, "submitit", log)) as f:
        commands = [line for line in f if line.startswith("$ ")]
    assert len(commands) == 2 and commands[0].rstrip().endswith("--name lspc_iql --seeds 0 1")  # one training
    paths = " ".join(f"--path {run_dir(logdir, 'lspc', seed)}" for seed in SEEDS)
    assert "eval_lspc.py" in commands[1] and commands[1].rstrip().endswith(paths)  # one evaluation of both
    for seed in SEEDS:  # each seed: the run directory, config and results its own run would have
        run = run_dir(logdir, "lspc", seed)
        with open(os.path.join(run, "eval", "results.json")) as f:
            results = json.load(f)
        assert (results["train_seed"], results["step"], results["episodes"]) == (seed, 100, 2)
        assert set(results["policies"]) == POLICIES["lspc"]
        with open(os.path.join(run, "config.yaml")) as f:
            assert f"seed: {seed}\n" in f.read()
    with open(os.path.join(logdir, "table.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert (row["runs"], row["seeds"]) == ("2", "2")
    again, _ = run_sweep(sweep_cmd(logdir, dataset_dir, "--stack_seeds", methods=["lspc"]))
    assert again.returncode == 0 and "2 runs, 2 already done (skipped), 0 to run in 0 jobs" in again.stdout


def test_stacked_dry_run_plans_one_job_per_task_and_threshold(dataset_dir, tmp_path, capsys):
    logdir = tmp_path / "sweep"
    load_script("sweep").main(sweep_cmd(logdir, dataset_dir, "--dry_run", "--stack_seeds",
                                        methods=["lspc", "bc-safe"])[2:])
    lines = capsys.readouterr().out.splitlines()
    train = [line for line in lines if "train_lspc_iql.py" in line]
    baseline = [line for line in lines if "train_baseline.py" in line]
    evaluate = [line for line in lines if "eval_lspc.py" in line]
    assert len(train) == 1 and train[0].endswith("--name lspc_iql --seeds 0 1") and "--seed " not in train[0]
    assert len(baseline) == 6 and len(evaluate) == 7  # the baselines: one job per seed and threshold
    paths = " ".join(f"--path {run_dir(logdir, 'lspc', seed)}" for seed in SEEDS)
    assert sum(paths in line for line in evaluate) == 1  # both seeds in one eval_lspc.py
    for seed in SEEDS:
        assert f"# {TASK} lspc seed {seed}: train ({run_dir(logdir, 'lspc', seed)})" in lines
    assert "dry run: 8 of 8 runs to submit in 7 jobs (local, at most 2 at once)" in lines[-1]


def test_stacked_dry_run_resumes_a_stack_once_and_stacks_only_new_seeds(stacked_sweep, dataset_dir, tmp_path,
                                                                        capsys):
    logdir = tmp_path / "sweep"
    shutil.copytree(stacked_sweep[0], logdir, ignore=shutil.ignore_patterns("submitit"))
    sweep = load_script("sweep")
    seeds = [str(s) for s in SEEDS]

    def planned(*flags, seeds=seeds):
        argv = sweep_cmd(logdir, dataset_dir, "--dry_run", "--stack_seeds", *flags, methods=["lspc"])[2:]
        at = argv.index("--seeds") + 1
        sweep.main(argv[:at] + seeds + argv[at + len(SEEDS):])
        return [line for line in capsys.readouterr().out.splitlines() if not line.startswith(("# ", "dry run"))]

    # longer: the whole stack resumes from one directory, with its own seeds and name, then both are evaluated
    resume, evaluate = planned("--max_timesteps", "200")
    assert resume.endswith(f"--max_timesteps 200 --eval_every 100 --eval_episodes 2 --hidden_dim 32 --latent_dim 8 "
                           f"--batch_size 64 --wandb_mode disabled --device cpu --resume {run_dir(logdir, 'lspc', 0)}")
    assert "--seeds" not in resume and "--name" not in resume
    assert all(f"--path {run_dir(logdir, 'lspc', seed)}" in evaluate for seed in SEEDS)
    # a seed added to the sweep: a stack of the new seeds only; the finished ones are not evaluated again
    train, evaluate = planned(seeds=[*seeds, "4", "5"])
    assert train.endswith("--name lspc_iql --seeds 4 5")
    assert f"--path {run_dir(logdir, 'lspc', 4)} --path {run_dir(logdir, 'lspc', 5)}" in evaluate
    assert f"--path {run_dir(logdir, 'lspc', 0)}" not in evaluate


def test_a_failed_seed_of_a_stack_is_reported_and_its_finished_seeds_evaluated(stacked_sweep, dataset_dir, tmp_path):
    logdir = tmp_path / "sweep"
    shutil.copytree(stacked_sweep[0], logdir, ignore=shutil.ignore_patterns("submitit"))
    for seed in SEEDS:
        shutil.rmtree(os.path.join(run_dir(logdir, "lspc", seed), "eval"))
    with open(os.path.join(run_dir(logdir, "lspc", 1), "checkpoint", "model.pt"), "wb") as f:
        f.write(b"not a checkpoint")  # looks interrupted: the job resumes the stack, and the resume fails
    result, _ = run_sweep(sweep_cmd(logdir, dataset_dir, "--stack_seeds", methods=["lspc"]))
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith(f"failed: {TASK} lspc seeds 0 1: ")]
    assert len(failed) == 1 and "train_lspc_iql.py exited with status 2; unfinished: seed 1" in failed[0], result.stderr
    assert os.path.isfile(os.path.join(run_dir(logdir, "lspc", 0), "eval", "results.json"))  # seed 0 loses nothing
    assert not os.path.exists(os.path.join(run_dir(logdir, "lspc", 1), "eval"))
    assert "sweep: 0 skipped, 1 ran, 1 failed" in result.stdout


def test_stacked_sweep_refuses_flags_that_cannot_stack(dataset_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("sweep").main(sweep_cmd(tmp_path / "sweep", dataset_dir, "--stack_seeds",
                                            "--method_extra", "lspc=--data_ratio 0.5", methods=["lspc"])[2:])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {TASK} lspc seeds 0 1 (--stack_seeds): --data_ratio draws each seed's data"), err
    assert not (tmp_path / "sweep").exists()


def test_a_longer_stacked_sweep_resumes_the_whole_stack(stacked_sweep, dataset_dir, tmp_path):
    logdir = tmp_path / "sweep"
    shutil.copytree(stacked_sweep[0], logdir, ignore=shutil.ignore_patterns("submitit"))
    result, _ = run_sweep(sweep_cmd(logdir, dataset_dir, "--stack_seeds", "--max_timesteps", "150", methods=["lspc"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"finished {TASK} lspc seeds 0 1 " in result.stdout and "(resumed, evaluated)" in result.stdout
    (log,) = [name for name in os.listdir(os.path.join(logdir, "submitit")) if name.endswith("_log.out")]
    with open(os.path.join(logdir, "submitit", log)) as f:
        train, evaluate = [line.rstrip() for line in f if line.startswith("$ ")]
    assert train.endswith(f"--resume {run_dir(logdir, 'lspc', 0)}") and "--seeds" not in train  # one resume of both
    assert all(f"--path {run_dir(logdir, 'lspc', seed)}" in evaluate for seed in SEEDS)
    for seed in SEEDS:
        with open(os.path.join(run_dir(logdir, "lspc", seed), "eval", "results.json")) as f:
            assert json.load(f)["step"] == 150

"""--seeds: several seeds trained in one process as one stacked model (train_lspc_iql.StackedLSPC).
Seed k of a stack is the run --seed k: the same initial parameters and batches bit for bit, the same
parameters and losses after 200 steps up to the rounding of batched kernels, and its own run directory."""
import dataclasses
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train_lspc_iql
from conftest import ROOT, load_script, tiny_args
from lspc.checkpoint import load_checkpoint
from lspc.data.dataset import TransitionBuffer
from lspc.device_emulation import VirtualCuda
from lspc.evaluation import Evaluator, episode_seeds
from lspc.run_logger import read_metrics
from lspc.training import default_generator_copy
from lspc_iql_configs import TrainConfig, load_config
from test_faults import chaos, finish, start, without_timing
from test_training import assert_same_state, run_dir_of
from train_lspc_iql import LSPC, StackedLSPC

STATE_DIM, ACTION_DIM, SEEDS = 6, 2, (0, 1, 3)
# Measured (200 CPU steps, hidden 32, batch 64, three seeds): parameters differ from the single-seed runs'
# by at most 6e-8, logged losses by at most 3e-7 relative. The bounds below leave a margin of ~15x.
PARAM_ATOL, METRIC_RTOL = 1e-6, 5e-6
CFG = TrainConfig(hidden_dim=32, latent_dim=8, batch_size=64)


def data(size=500):
    g = torch.Generator().manual_seed(7)
    return {"observations": torch.randn(size, STATE_DIM, generator=g).numpy(),
            "actions": (torch.rand(size, ACTION_DIM, generator=g) * 2 - 1).numpy(),
            "rewards": torch.randn(size, generator=g).numpy(), "costs": torch.rand(size, generator=g).numpy(),
            "next_observations": torch.randn(size, STATE_DIM, generator=g).numpy(),
            "terminals": np.zeros(size), "timeouts": np.zeros(size)}


def single_run(seed):
    """What train() does for --seed k: seed, sampler, agent; then the steps draw from the global stream."""
    torch.manual_seed(seed)
    sampler = TransitionBuffer(data(), torch.device("cpu"), seed)
    return LSPC(STATE_DIM, ACTION_DIM, 1.0, CFG, torch.device("cpu")), sampler


def stacked_run(seeds, cfg=CFG):
    agents, noise = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        agents.append(LSPC(STATE_DIM, ACTION_DIM, 1.0, cfg, torch.device("cpu")))
        noise.append(default_generator_copy(torch.device("cpu")))
    return StackedLSPC(agents, noise), TransitionBuffer(data(), torch.device("cpu"), list(seeds))


def test_a_stacked_seed_is_its_single_seed_run():
    stack, stacked_sampler = stacked_run(SEEDS)
    states = stack.state_dicts()
    singles = [single_run(seed) for seed in SEEDS]
    for (agent, sampler), state in zip(singles, states):
        assert_same_state(agent.state_dict(), state)  # initial parameters and Adam states, bit for bit
    stacked_metrics = []
    for _ in range(200):
        batch = stacked_sampler.sample(CFG.batch_size)
        stacked_metrics.append(stack.train(batch))
    assert stacked_sampler.sample(CFG.batch_size)["observations"].shape == (len(SEEDS), CFG.batch_size, STATE_DIM)
    states = stack.state_dicts()
    for k, (agent, sampler) in enumerate(singles):
        torch.set_rng_state(stack_noise_start(SEEDS[k]))
        for step in range(200):
            metrics = agent.train(sampler.sample(CFG.batch_size))
            for name, value in metrics.items():
                assert stacked_metrics[step][name][k].item() == pytest.approx(value.item(), rel=METRIC_RTOL, abs=1e-7), \
                    (SEEDS[k], step, name)
        for module, tensors in agent.state_dict().items():
            if module.endswith("_optimizer"):
                continue
            for key, tensor in tensors.items():
                assert torch.allclose(tensor, states[k][module][key], rtol=0, atol=PARAM_ATOL), (SEEDS[k], module, key)
    # the batches: each seed's indices are its single run's, bit for bit
    _, fresh = stacked_run(SEEDS)
    stacked_batch = fresh.sample(CFG.batch_size)
    for k, seed in enumerate(SEEDS):
        alone = TransitionBuffer(data(), torch.device("cpu"), seed).sample(CFG.batch_size)
        for key, value in alone.items():
            assert torch.equal(stacked_batch[key][k], value), (seed, key)


def test_eight_stacked_seeds_launch_at_most_a_sixth_of_one_seeds_kernels_per_seed():
    """Issue 33's goal, counted on the virtual GPU: the stacked step of 8 seeds asks the GPU for at most a
    sixth of the kernels per seed that the single-seed step asks for (tools/bench/bench_train.py --launches
    measures the table in docs/speed.md)."""
    bench_train = load_script("bench_train", "tools/bench")
    single = bench_train.launches_per_step(lambda d: LSPC(STATE_DIM, ACTION_DIM, 1.0, CFG, d),
                                           lambda d: bench_train.random_batches(1, CFG, STATE_DIM, ACTION_DIM, d)[0])
    eight = bench_train.launches_per_step(lambda d: bench_train.stacked_step(8, CFG, STATE_DIM, ACTION_DIM, d),
                                          lambda d: bench_train.stacked_batches(1, 8, CFG, STATE_DIM, ACTION_DIM, d)[0])
    assert eight / 8 <= single / 6, (eight, single)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_stack_trains_as_the_eager_stack(monkeypatch):
    """--compile with --seeds compiles the stack's two vmapped losses and trains as the eager stack does."""
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compiled.append((fn.__name__, mode)) or
                        real_compile(fn, mode=mode))
    runs = []
    for compile_step in (False, True):
        stack, sampler = stacked_run((0, 1), dataclasses.replace(CFG, compile=compile_step))
        metrics = [stack.train(sampler.sample(CFG.batch_size)) for _ in range(3)]
        runs.append((metrics, stack.state_dicts()))
    assert [mode for name, mode in compiled if name == "stacked"] == ["default", "default"]
    (eager_metrics, eager_states), (compiled_metrics, compiled_states) = runs
    for eager, compiled_step in zip(eager_metrics, compiled_metrics):
        for name, value in eager.items():
            assert torch.allclose(compiled_step[name], value, rtol=1e-4, atol=1e-5), name
    for eager, compiled_state in zip(eager_states, compiled_states):
        for module, tensors in eager.items():
            if not module.endswith("_optimizer"):
                for key, tensor in tensors.items():
                    assert torch.allclose(compiled_state[module][key], tensor, rtol=0, atol=1e-5), (module, key)


@pytest.mark.parametrize("device, compile_step, mode, marks", [
    ("cpu", True, "default", 0), ("cuda", True, "reduce-overhead", 2), ("cuda", False, None, 0)])
def test_a_stack_compiles_as_the_single_seed_step_does(monkeypatch, device, compile_step, mode, marks):
    """As LSPC's: "reduce-overhead" (CUDA graphs) on CUDA, and each step tells the CUDA graph tree that the
    previous step's outputs are consumed; torch's default mode elsewhere; nothing compiled without --compile."""
    compiled, marked = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compiled.append((fn.__name__, mode)) or fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marked.append(1))
    bench_train = load_script("bench_train", "tools/bench")
    cfg = dataclasses.replace(CFG, compile=compile_step)
    with VirtualCuda():
        stack = bench_train.stacked_step(2, cfg, STATE_DIM, ACTION_DIM, torch.device(device))
        for batch in bench_train.stacked_batches(2, 2, cfg, STATE_DIM, ACTION_DIM, torch.device(device)):
            stack.train(batch)
    assert [m for name, m in compiled if name == "stacked"] == ([mode, mode] if compile_step else [])
    assert len(marked) == marks


def stack_noise_start(seed):
    torch.manual_seed(seed)
    LSPC(STATE_DIM, ACTION_DIM, 1.0, CFG, torch.device("cpu"))
    return torch.get_rng_state()


def test_no_gradient_crosses_seeds():
    """Seed 1's batch replaced by another (and its noise): seed 0's parameters after three steps are the same bit for bit."""
    results = []
    for other_batch in (False, True):
        stack, sampler = stacked_run((0, 1))
        for _ in range(3):
            batch = sampler.sample(CFG.batch_size)
            if other_batch:
                batch = {key: torch.cat([value[:1], value[1:].flip(1) * 3 + 1]) for key, value in batch.items()}
                stack.noise_generators[1].manual_seed(99)
            stack.train(batch)
        results.append(stack.state_dicts())
    assert_same_state(results[0][0], results[1][0])
    assert not torch.equal(results[0][1]["value"]["v.0.weight"], results[1][1]["value"]["v.0.weight"])


def test_stacked_evaluation_plays_each_seeds_episodes_as_alone(ballrun_env):
    evaluator = Evaluator("OfflineBallRun-v0", 30, 4)
    agents = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        agents.append(LSPC.for_env(ballrun_env, CFG, torch.device("cpu")))
    seeds = [episode_seeds(seed, 2) for seed in (0, 1)]
    together = evaluator.run_groups([agent.act_lspc_o for agent in agents], seeds, [0, 1], torch.device("cpu"))
    for agent, group, seed, result in zip(agents, seeds, (0, 1), together):
        alone = evaluator.run(agent.act_lspc_o, group, seed, torch.device("cpu"))
        for key in alone:
            assert np.array_equal(alone[key], result[key]), key
    assert not np.array_equal(together[0]["reward"], together[1]["reward"])
    evaluator.close()


def stacked_args(ballrun_file, logdir, seeds, **overrides):
    args = tiny_args(ballrun_file, logdir, name="lspc_iql", **overrides)
    return [*args, "--seeds", *map(str, seeds)]


def test_four_seeds_write_four_ordinary_run_directories(ballrun_file, tmp_path):
    seeds = (0, 1, 2, 5)
    first = train_lspc_iql.train(load_config(stacked_args(ballrun_file, tmp_path / "stack", seeds)))
    assert first == run_dir_of(tmp_path / "stack", "lspc_iql-seed0")
    for seed in seeds:
        stacked = run_dir_of(tmp_path / "stack", f"lspc_iql-seed{seed}")
        alone = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path / "alone", seed=seed)))
        assert sorted(os.listdir(os.path.join(stacked, "checkpoint"))) == sorted(os.listdir(os.path.join(alone, "checkpoint")))
        a, b = (load_checkpoint(os.path.join(d, "checkpoint", "model.pt")) for d in (stacked, alone))
        assert a["step"] == b["step"] == 20 and a["config"]["seed"] == seed and a["model"].keys() == b["model"].keys()
        for module, tensors in b["model"].items():
            if not module.endswith("_optimizer"):
                for key, tensor in tensors.items():
                    assert torch.allclose(a["model"][module][key], tensor, rtol=0, atol=PARAM_ATOL), (seed, module, key)
        assert_same_state(a["rng"]["sampler"], b["rng"]["sampler"])
        rows_a, rows_b = without_timing(read_metrics(stacked)), without_timing(read_metrics(alone))
        assert [row["step"] for row in rows_a] == [row["step"] for row in rows_b]
        for row_a, row_b in zip(rows_a, rows_b):
            assert row_a.keys() == row_b.keys()
            for key in row_b:
                assert row_a[key] == pytest.approx(row_b[key], rel=METRIC_RTOL, abs=1e-6), (seed, row_b["step"], key)
        with open(os.path.join(stacked, "config.yaml")) as f:
            assert f"seed: {seed}\n" in f.read()


def test_a_stack_holds_one_copy_of_the_data(ballrun_file, tmp_path, monkeypatch):
    """One data buffer for all seeds, as large as a single-seed run's; each seed only adds its generator."""
    buffers = []

    class Recorded(TransitionBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)

    monkeypatch.setattr(train_lspc_iql, "TransitionBuffer", Recorded)
    train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path / "alone", max_timesteps=5, eval_every=0)))
    train_lspc_iql.train(load_config(stacked_args(ballrun_file, tmp_path / "stack", (0, 1, 2), max_timesteps=5,
                                                  eval_every=0)))
    alone, stacked = buffers

    def data_bytes(buffer):
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for t in vars(buffer).values() if isinstance(t, torch.Tensor)}
        return sum(storages.values())

    assert data_bytes(stacked) == data_bytes(alone) > 0
    assert len(stacked.generators) == 3 and len(alone.generators) == 1


def test_stacked_resume_is_bit_exact_and_a_sigkilled_stack_resumes_bit_exact(ballrun_file, tmp_path):
    schedule = dict(max_timesteps=300, eval_every=100, log_every=10, eval_episodes=1, checkpoint_every_minutes=0.0005)

    def command(logdir):
        return [sys.executable, "train_lspc_iql.py", *stacked_args(ballrun_file, logdir, (0, 2), **schedule)]

    assert finish(start(command(tmp_path / "straight"))) == 0
    chaos(command(tmp_path / "chaos"), run_dir_of(tmp_path / "chaos", "lspc_iql-seed0"), kills=3,
          rng=random.Random("chaos-stacked"), max_timesteps=schedule["max_timesteps"])
    for seed in (0, 2):
        straight, chaotic = (run_dir_of(tmp_path / d, f"lspc_iql-seed{seed}") for d in ("straight", "chaos"))
        a, b = (load_checkpoint(os.path.join(d, "checkpoint", "model.pt")) for d in (straight, chaotic))
        assert a["step"] == b["step"] == 300
        for key in ("model", "rng", "window", "best", "stack"):
            assert_same_state(a[key], b[key], key)
        assert without_timing(read_metrics(chaotic)) == without_timing(read_metrics(straight))
        for best in ("model_best_o.pt", "model_best_s.pt"):
            assert_same_state(load_checkpoint(os.path.join(straight, "checkpoint", best))["model"],
                              load_checkpoint(os.path.join(chaotic, "checkpoint", best))["model"], best)
        assert not [f for f in os.listdir(os.path.join(chaotic, "checkpoint")) if f.startswith(".tmp-")]


def test_a_diverged_seed_stops_alone_and_the_others_train_on(ballrun_file, tmp_path, monkeypatch, capsys):
    original = StackedLSPC.train
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        if calls["n"] == 13:  # seed 1's reward V goes NaN at step 13
            with torch.no_grad():
                self.params["value.v.0.weight"][1].fill_(float("nan"))
        return original(self, batch)

    monkeypatch.setattr(StackedLSPC, "train", poisoned)
    with pytest.raises(SystemExit) as exit_info:
        train_lspc_iql.main(stacked_args(ballrun_file, tmp_path, (0, 1, 2), max_timesteps=30))
    assert exit_info.value.code == 1
    errors = re.findall(r"error: [^\r\n]*", capsys.readouterr().err)  # (the progress bar shares stderr)
    assert errors[0].startswith("error: seed 1 diverged: value_loss became NaN or infinite at step 13;"), errors
    assert len(errors) == 2 and "seed 1 diverged" in errors[1], errors
    steps = {seed: load_checkpoint(os.path.join(run_dir_of(tmp_path, f"lspc_iql-seed{seed}"), "checkpoint",
                                                "model.pt"))["step"] for seed in (0, 1, 2)}
    assert steps == {0: 30, 1: 10, 2: 30}
    assert max(row["step"] for row in read_metrics(run_dir_of(tmp_path, "lspc_iql-seed1"))) == 10


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0", "1", "0"], "error: --seeds lists seed 0 twice; give each seed once"),
    (["--seeds", "0", "1", "--seed", "3"], "error: --seeds trains several seeds in one process, --seed one: give one of them"),
    (["--seeds", "0", "1", "--data_ratio", "0.5"], "error: --data_ratio draws each seed's data with its seed"),
])
def test_bad_seeds_get_one_line(ballrun_file, tmp_path, flags, message):
    args = [*tiny_args(ballrun_file, tmp_path, name="lspc_iql"), *flags]
    proc = subprocess.run([sys.executable, "train_lspc_iql.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert not os.path.exists(tmp_path / "OfflineBallRun-v0-cost-10")


def test_resuming_a_stack_with_other_seeds_is_refused(ballrun_file, tmp_path):
    train_lspc_iql.train(load_config(stacked_args(ballrun_file, tmp_path, (0, 1), max_timesteps=10)))
    run_dir = run_dir_of(tmp_path, "lspc_iql-seed1")
    for flags, message in ((["--seeds", "0", "2"], f"--resume {run_dir} is a stacked run of seeds [0, 1], not [0, 2]"),
                           (["--seed", "1"], f"--resume {run_dir} is a stacked run of seeds [0, 1]: resume it without --seed")):
        with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(["--resume", run_dir, *flags])
    # from any seed's directory, the whole stack goes on
    train_lspc_iql.train(load_config(["--resume", run_dir, "--max_timesteps", "20"]))
    for seed in (0, 1):
        assert load_checkpoint(os.path.join(run_dir_of(tmp_path, f"lspc_iql-seed{seed}"), "checkpoint",
                                            "model.pt"))["step"] == 20


def test_eval_lspc_plays_a_stacks_seeds_in_one_batch_and_each_scores_as_alone(ballrun_file, tmp_path, monkeypatch):
    """eval_lspc.py with several run directories: one batched pass (seeds x episodes) per policy and
    restriction value, and each seed's results.json equal, bit for bit, to evaluating its run alone."""
    import eval_lspc
    from lspc.evaluation import Evaluator

    train_lspc_iql.train(load_config(stacked_args(ballrun_file, tmp_path, (0, 1))))
    run_dirs = [run_dir_of(tmp_path, f"lspc_iql-seed{seed}") for seed in (0, 1)]
    flags = ["--eval_episodes", "2", "--seed", "3", "--eps_o", "0.3", "--no_figures", "--vector", "lockstep"]
    batches = []
    run_groups = Evaluator.run_groups

    def counted(self, policies, seeds, policy_seeds, device):
        batches.append(len(policies))
        return run_groups(self, policies, seeds, policy_seeds, device)

    monkeypatch.setattr(Evaluator, "run_groups", counted)
    eval_lspc.main([*run_dirs, *flags])
    assert batches == [2] * 4  # lspc-o, lspc-s, cvae and one restriction value, both seeds in each batch
    together = [json.load(open(os.path.join(d, "eval", "results.json"))) for d in run_dirs]
    batches.clear()
    for run_dir, results in zip(run_dirs, together):
        eval_lspc.main(["--path", run_dir, *flags])
        assert json.load(open(os.path.join(run_dir, "eval", "results.json"))) == results
    assert batches == [1] * 8
    assert [results["train_seed"] for results in together] == [0, 1]
    assert together[0]["policies"]["lspc-o"]["episodes"] != together[1]["policies"]["lspc-o"]["episodes"]


def offline_wandb_runs(run_dir):
    """Each offline wandb run under ``run_dir``, oldest first: its id, name, config seed and history rows,
    read from the run's .wandb file (the records ``wandb sync`` would upload)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    runs = []
    for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))):
        store = datastore.DataStore()
        store.open_for_scan(path)
        run = {"rows": [], "finished": False}
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
                run.update(id=record.run.run_id, name=record.run.display_name, seed=config["seed"])
            elif kind == "history":
                run["rows"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                    for item in record.history.item})
            run["finished"] |= kind == "exit"
        runs.append(run)
    return runs


def test_each_stacked_seed_has_its_own_wandb_run_which_resumes_under_its_id(ballrun_file, tmp_path):
    """--wandb_mode offline (no network): each seed's wandb run lives in a child process of its own (wandb
    keeps one run per process) and writes into that seed's run directory. A SIGTERM to the whole process
    group (Ctrl-C, or Slurm stopping a job) loses none of its rows, and --resume continues each seed's run
    under its id."""
    args = stacked_args(ballrun_file, tmp_path, (0, 1), max_timesteps=3000, eval_every=1000, log_every=5,
                        eval_episodes=1, wandb_mode="offline")
    process = subprocess.Popen([sys.executable, "train_lspc_iql.py", *args], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dirs = [run_dir_of(tmp_path, f"lspc_iql-seed{seed}") for seed in (0, 1)]
    metrics = os.path.join(run_dirs[1], "metrics.jsonl")
    while not (os.path.exists(metrics) and len(read_metrics(run_dirs[1])) >= 2):
        assert process.poll() is None, "the stacked run ended before logging two rows"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)  # the training process and the seeds' wandb processes
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    stopped = load_checkpoint(os.path.join(run_dirs[0], "checkpoint", "model.pt"))["step"]
    train_lspc_iql.train(load_config(["--resume", run_dirs[1], "--max_timesteps", str(stopped + 5)]))
    ids = []
    for seed, run_dir in zip((0, 1), run_dirs):
        first, resumed = offline_wandb_runs(run_dir)
        checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))
        assert first["id"] == resumed["id"] == checkpoint["wandb_id"] and first["finished"] and resumed["finished"]
        assert first["name"] == resumed["name"] == f"lspc_iql-seed{seed}" and first["seed"] == resumed["seed"] == seed
        ids.append(first["id"])
        logged = {}  # metrics.jsonl's rows by step (wandb merges the rows of one step)
        for row in read_metrics(run_dir):
            logged.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k != "step"})
        assert [row["_step"] for row in first["rows"]] == [step for step in logged if step <= stopped]
        assert [row["_step"] for row in resumed["rows"]] == [step for step in logged if step > stopped]
        for row in first["rows"] + resumed["rows"]:
            assert {key: row[key] for key in logged[row["_step"]]} == logged[row["_step"]], (seed, row["_step"])
    assert ids[0] != ids[1]


@pytest.mark.parametrize("stacked", [True, False])
def test_wandb_that_cannot_start_gets_one_line(ballrun_file, tmp_path, stacked):
    """wandb online without an API key: one line, at once (a seed's wandb process that failed used to leave
    its parent waiting for a run id), for a stacked run as for a single one."""
    args = (stacked_args(ballrun_file, tmp_path, (0, 1), wandb_mode="online") if stacked
            else tiny_args(ballrun_file, tmp_path, wandb_mode="online"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "train_lspc_iql.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**env, "HOME": str(tmp_path), "WANDB_SILENT": "true"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert errors == ["error: wandb could not start the run lspc_iql-seed0 (UsageError: api_key not configured "
                      "(no-tty). call wandb.login(key=[your_api_key])); log in with `wandb login`, or train with "
                      "--wandb_mode offline or disabled"], proc.stderr

"""Bring your own method: the example plugin (examples/td3bc_lag.py) gets the shared guarantees through
its import path alone, bad plugins get one line each, and lspc.check_method catches each planted
violation in a copy of the example. (Its chaos test is tests/test_faults.py's, its virtual-GPU
scripts test tests/test_cuda_emulation.py's, its sweep down to the table tests/test_sweep_all_methods.py's:
the same tests as our methods'.)"""
import dataclasses
import json
import os
import sys

import pytest
import torch
import yaml

import eval_lspc
import examples.td3bc_lag
from conftest import ROOT, load_script
from lspc import check_method
from lspc.checkpoint import load_checkpoint
from lspc.plugin import RunConfig
from lspc.run_logger import read_metrics
from test_baselines import TASK, flags, train, without_timing
from test_eval import tree_digest
from test_faults import finish, start
from test_training import assert_same_state

EXAMPLE = "examples.td3bc_lag:TD3BCLag"
RUN_NAME = "td3bc-lag-seed0"
train_baseline = load_script("train_baseline")


# plugins with a mistake, by import path "test_plugin:<class>"
class AnyThreshold(examples.td3bc_lag.TD3BCLag):
    name = "td3bc-any"
    per_threshold = False


class OwnConfig(examples.td3bc_lag.TD3BCLag):
    name = "own-config"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.cfg = self.hparams  # the hyperparameters in place of the run's config


class Colliding(examples.td3bc_lag.TD3BCLag):
    name = "cpq"


@dataclasses.dataclass
class ShadowingConfig(examples.td3bc_lag.TD3BCLagConfig):
    batch_size: int = 32


class Shadowing(examples.td3bc_lag.TD3BCLag):
    name = "shadowing"
    config_cls = ShadowingConfig


def example_flags(dataset, logdir, **overrides):
    return flags(EXAMPLE, dataset, logdir, **{"name": RUN_NAME, **overrides})


@pytest.fixture(scope="module")
def example_run(ballrun_file, tmp_path_factory):
    """The example trained 20 steps by its import path: (run_dir, argv, stdout)."""
    argv = example_flags(ballrun_file, tmp_path_factory.mktemp("example"))
    return (*train(argv), argv)


def test_the_run_directory_and_config_yaml_record_the_import_path(example_run):
    run_dir, stdout, argv = example_run
    assert run_dir.endswith(os.path.join(f"{TASK}-cost-10", RUN_NAME)) and stdout.rstrip().endswith(f"done: {run_dir}")
    assert sorted(os.listdir(run_dir)) == [".lock", "checkpoint", "config.yaml", "metrics.jsonl"]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoint"))) == ["model.pt", "model_best.pt"]
    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["algo"] == EXAMPLE and saved["hparams"]["a_hidden_sizes"] == [32, 32]
    assert RunConfig(**saved) == train_baseline.load_config(argv)
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows if "train/critic_loss" in row] == [5, 10, 15, 20]
    assert set(rows[0]) == {"step", *(f"train/{name}" for name in ("critic_loss", "cost_critic_loss", "actor_loss",
                                                                   "multiplier"))}
    # without --name the run is named after the plugin's name, not its import path
    cfg = train_baseline.load_config(example_flags("unused", "logs", name=None, dataset_path=None))
    assert cfg.name == "td3bc-lag-batch_size64-hidden_dim32-seed0"


def test_resume_is_bit_exact(example_run, ballrun_file, tmp_path):
    run_dir, _ = train(example_flags(ballrun_file, tmp_path, max_timesteps=10))
    train([*example_flags(ballrun_file, tmp_path), "--resume", run_dir])
    straight, resumed = (load_checkpoint(os.path.join(d, "checkpoint", "model.pt")) for d in (example_run[0], run_dir))
    for key in ("step", "model", "rng", "window", "best"):
        assert_same_state(resumed[key], straight[key], key)
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(example_run[0]))


def test_a_second_process_is_refused_and_a_non_finite_loss_stops_the_run(ballrun_file, tmp_path, monkeypatch, capsys):
    argv = example_flags(ballrun_file, tmp_path / "locked", max_timesteps=100000, eval_every=100000,
                         checkpoint_every_minutes=0.001)
    first = start([sys.executable, os.path.join(ROOT, "scripts", "train_baseline.py"), *argv])
    run_dir = os.path.join(str(tmp_path / "locked"), f"{TASK}-cost-10", RUN_NAME)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_baseline.main(["--resume", run_dir])
    finally:
        first.kill()
        finish(first)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"error: {run_dir} is being trained by process {first.pid}; wait for it to end "
                                       f"or stop it (kill {first.pid})\n")
    real_train = examples.td3bc_lag.TD3BCLagAgent.train

    def diverging(self, batch):  # the critic's loss goes NaN at update 13
        metrics = real_train(self, batch)
        return {**metrics, "critic_loss": metrics["critic_loss"] * (float("nan") if self.updates == 13 else 1.0)}

    monkeypatch.setattr(examples.td3bc_lag.TD3BCLagAgent, "train", diverging)
    with pytest.raises(SystemExit) as exit_info:
        train(example_flags(ballrun_file, tmp_path / "nan"))
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert exit_info.value.code == 1 and errors == ["error: training diverged: critic_loss became NaN or infinite at "
                                                    "step 13; the last good checkpoint is kept"]
    checkpoint = os.path.join(str(tmp_path / "nan"), f"{TASK}-cost-10", RUN_NAME, "checkpoint", "model.pt")
    assert load_checkpoint(checkpoint)["step"] == 10


def test_eval_lspc_rebuilds_the_model_from_config_yaml_and_scores_its_thresholds(example_run, ballrun_file, tmp_path,
                                                                                  capsys):
    run_dir = example_run[0]
    eval_lspc.main([run_dir, "--eval_episodes", "2"])
    with open(os.path.join(run_dir, "eval", "results.json")) as f:
        results = json.load(f)
    # trained against its cost limit (per_threshold): scored there only, with what training logged there
    assert (results["algo"], results["per_threshold"], results["thresholds"]) == (EXAMPLE, True, [10.0])
    entry = results["policies"]["td3bc-lag"]
    logged = next(row for row in read_metrics(run_dir) if row["step"] == 20 and "eval/Reward" in row)
    assert (entry["reward"], entry["cost"]) == (logged["eval/Reward"], logged["eval/Cost"])
    before = tree_digest(run_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_lspc.main([run_dir, "--cost_limits", "20", "40"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(
        f"error: {EXAMPLE} was trained for cost limit 10, so its score at --cost_limits 20 40 would mean nothing")
    assert tree_digest(run_dir) == before
    # a plugin that never reads the cost limit is scored at all three thresholds from one run
    any_dir, _ = train(flags("test_plugin:AnyThreshold", ballrun_file, tmp_path, name="any-seed0", max_timesteps=4,
                             eval_every=4))
    results = eval_lspc.evaluate_run(any_dir, eval_episodes=2)
    assert results["thresholds"] == [10.0, 20.0, 40.0]
    assert set(results["policies"]["td3bc-any"]["thresholds"]) == {"10", "20", "40"}


def test_transfer_evaluates_a_plugin_run(example_run):
    transfer = load_script("transfer")
    (result,) = transfer.transfer(example_run[0], [TASK], eval_episodes=1)
    assert list(result["policies"]) == ["td3bc-lag"] and result["trained_task"] == TASK


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_sweep_plans_one_run_per_threshold_named_after_the_plugin(executor, tmp_path, capsys):
    load_script("sweep").main(["--executor", executor, "--dry_run", "--tasks", TASK, "--seeds", "0", "--methods",
                               EXAMPLE, "--logdir", str(tmp_path), "--method_extra", f"{EXAMPLE}=--hidden_dim 32"])
    lines = capsys.readouterr().out.splitlines()
    train_lines = [line for line in lines if "train_baseline.py" in line]
    assert len(train_lines) == 3 and all(f"--algo {EXAMPLE} " in line and "--hidden_dim 32" in line and
                                         line.endswith(f"--name {RUN_NAME}") for line in train_lines)
    for kappa in (10, 20, 40):
        assert f"# {TASK} {EXAMPLE} seed 0 κ={kappa}: train ({tmp_path}/{TASK}-cost-{kappa}/{RUN_NAME})" in lines
    assert sum("eval_lspc.py" in line for line in lines) == 3


def test_make_table_reads_whether_a_plugin_trains_per_threshold(tmp_path, capsys):
    for kappa in (10, 20, 40):  # as eval_lspc.py writes a per-threshold plugin's results
        run = tmp_path / f"cost-{kappa}" / RUN_NAME
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "results.json").write_text(json.dumps({
            "task": TASK, "run": str(run), "train_seed": 0, "algo": EXAMPLE, "per_threshold": True,
            "policies": {"td3bc-lag": {"thresholds": {
                str(kappa): {"normalized_reward": 0.5, "normalized_cost": 0.5}}}}}))
    table = load_script("make_table").write_table([str(tmp_path)], str(tmp_path / "table"))
    assert table.splitlines()[-1] == ("Each cell: mean over 1 seed × the thresholds κ (bullet: 10, 20, 40). "
                                      "TD3BC-LAG: trained once per threshold and scored at that κ only (BC-Safe on "
                                      "the trajectories with cost return <= κ; the others with κ as their cost "
                                      "limit).")


@pytest.mark.parametrize("algo, expected", [
    ("examples.nope:TD3BCLag", "--algo examples.nope:TD3BCLag: cannot import examples.nope (No module named "
                               "'examples.nope'); put its directory on PYTHONPATH"),
    ("examples.td3bc_lag:Nope", "--algo examples.td3bc_lag:Nope: examples.td3bc_lag has no Nope"),
    ("examples.td3bc_lag:TD3BCLagConfig", "--algo examples.td3bc_lag:TD3BCLagConfig: TD3BCLagConfig is not a Method: "
                                          "subclass lspc.plugin.Method"),
    ("test_plugin:OwnConfig", "OwnConfig's config (TD3BCLagConfig) lacks the fields the training loop reads: task, "
                              "seed, cost_limit, episode_len, max_timesteps"),
    ("test_plugin:Colliding", "--algo test_plugin:Colliding: its name 'cpq' is one of ours"),
    ("test_plugin:Shadowing", "ShadowingConfig has fields the run's config already has (the loop reads "
                              "cfg.<field>): ['batch_size']"),
    ("examples.td3bc_lag", "unknown algo 'examples.td3bc_lag'; expected one of bc-all"),
])
def test_a_bad_plugin_gets_one_line_and_nothing_is_written(algo, expected, ballrun_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_baseline.main(flags(algo, ballrun_file, tmp_path / "logs", name="bad-seed0"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert not os.path.exists(tmp_path / "logs")


def test_the_sweep_and_check_method_refuse_a_bad_import_path_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("sweep").main(["--tasks", TASK, "--methods", "examples.nope:X", "--logdir", str(tmp_path / "s")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --algo examples.nope:X: cannot import examples.nope")
    with pytest.raises(SystemExit) as exit_info:
        check_method.main(["test_plugin:Colliding"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# lspc.check_method: the example keeps every promise; a copy with one planted violation breaks that one
# ---------------------------------------------------------------------------------------------
SAMPLER_PLANT = '''    def make_sampler(self, data, device):
        buffer = super().make_sampler(data, device)

        def sample(batch_size):  # planted: indices from torch's global generator
            idx = torch.randint(buffer.size, (batch_size,), device=device)
            return {key: getattr(buffer, key)[idx] for key in ("observations", "actions", "rewards", "costs",
                                                               "next_observations", "dones")}
        buffer.sample = sample
        return buffer

'''
FIXED_SEED_PLANT = '''    def make_sampler(self, data, device):
        from lspc.data.dataset import TransitionBuffer
        return TransitionBuffer(data, device, 0)  # planted: not cfg.seed

'''
BUILD_AGENT = "    def build_agent(self, env"
PLANTS = {  # promise -> the example's text replaced, and what its line says
    "resume": ([('"updates": self.updates,', ''), ('self.updates = int(state["updates"])', 'pass')],
               "a resume is not bit-exact: 3 updates after a state_dict round trip, "
               "the metrics[0]['actor_loss'] differs"),
    "policy": ([("    @torch.no_grad()\n    def act", "    def act")], "act builds an autograd graph"),
    "sampler": ([(BUILD_AGENT, SAMPLER_PLANT + BUILD_AGENT)],
                "sampler.sample draws from torch's global generator, not from its own seeded sampler.generator"),
    "sampler seed": ([(BUILD_AGENT, FIXED_SEED_PLANT + BUILD_AGENT)], "the sampler draws the same batches for seeds 0 "
                                                                      "and 1: seed its generator with cfg.seed"),
    "device": ([("float(env.action_space.high[0])", "torch.as_tensor(env.action_space.high)")],
               "a tensor on the wrong device (aten.mul: expected all tensors to be on the same device"),
    "syncs": ([("lagrangian.abs().mean().detach()", "lagrangian.abs().mean().item()")],
              "train makes 0.666667 host syncs per update (item at "),
}
CHECK_FLAGS = ["--hidden_dim", "32"]


def planted_copy(tmp_path, monkeypatch, plant):
    """A copy of the example with the plant's replacements, importable as planted_<n>:TD3BCLag."""
    with open(examples.td3bc_lag.__file__) as f:
        text = f.read()
    for old, new in PLANTS[plant][0]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    module = f"planted_{list(PLANTS).index(plant)}"
    (tmp_path / f"{module}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{module}:TD3BCLag"


def test_the_example_keeps_every_promise(ballrun_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_method.main([EXAMPLE, "--dataset_path", ballrun_file, *CHECK_FLAGS])
    out = capsys.readouterr().out.splitlines()
    assert exit_info.value.code == 0, out
    assert [line.split(":")[0] for line in out[:-1]] == [f"ok      {key}" for key, *_ in check_method.PROMISES]
    assert out[-1] == f"{EXAMPLE}: 6 of 6 promises kept"


@pytest.mark.parametrize("plant", list(PLANTS))
def test_check_method_breaks_the_planted_promise_only(plant, ballrun_file, tmp_path, monkeypatch, capsys):
    path = planted_copy(tmp_path, monkeypatch, plant)
    results = check_method.check(path, ["--dataset_path", ballrun_file, *CHECK_FLAGS])
    broken = {key: problem for key, _, problem in results if problem is not None}
    assert list(broken) == [plant.split()[0]], broken
    assert PLANTS[plant][1] in broken[plant.split()[0]], broken
    if plant == "device":  # the line points at the code to fix
        assert f"at {tmp_path / 'planted_4.py'}:" in broken["device"]


def test_check_method_prints_one_line_per_broken_promise(ballrun_file, tmp_path, monkeypatch, capsys):
    path = planted_copy(tmp_path, monkeypatch, "syncs")
    with pytest.raises(SystemExit) as exit_info:
        check_method.main([path, "--dataset_path", ballrun_file, *CHECK_FLAGS])
    out = capsys.readouterr().out.splitlines()
    assert exit_info.value.code == 1
    assert [line for line in out if line.startswith("BROKEN")] == [out[4]] and out[4].startswith("BROKEN  syncs: ")
    assert out[-1] == f"{path}: 5 of 6 promises kept"


"""The CUDA paths without a GPU: every method trained, checkpointed, resumed and evaluated on a virtual
GPU (``lspc.device_emulation``) through the real scripts, and the emulation layer's own self-test."""
import collections
import contextlib
import glob
import io
import json
import os

import numpy as np
import pytest
import torch

import eval_lspc
import train_lspc_iql
from conftest import load_script, needs_simulator, simulator_missing, tiny_args
from lspc.methods.baselines import BaselineMethod
from lspc.plugin import Method as PluginMethod
from lspc.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from lspc.device_emulation import VirtualCuda, VirtualDeviceError, active, device_of

train_baseline = load_script("train_baseline")
bench_methods = load_script("bench_methods", "tools/bench")

METHODS = ("lspc", "bc-all", "bc-safe", "cdt", "bcq-lag", "bear-lag", "cpq", "coptidice", "fisor", "trac")
PLUGIN = "examples.td3bc_lag:TD3BCLag"  # a method plugged in by its import path
# small networks and batches, as the miniature sweep's
OWN_FLAGS = {"lspc": {"latent_dim": 8}, "cdt": {"hparam": "augment_percent=0"}, "fisor": {"hparam": "critic_batch_size=32"},
             "trac": {"hparam": "bc_steps=3"}}


# -- the layer's self-test: planted bugs are caught, clean code reports nothing ----------------------------
def _cpu_generator_fills_cuda_tensor():
    torch.randn(3, generator=torch.Generator(), device="cuda")


def _cuda_generator_fills_cpu_tensor():
    torch.empty(3).bernoulli_(0.5, generator=torch.Generator(device="cuda"))


def _numpy_of_cuda_tensor():
    torch.ones(3, device="cuda").numpy()


def _np_asarray_of_cuda_tensor():
    np.asarray(torch.ones(3, device="cuda"))


def _cpu_index_into_cuda_tensor():
    torch.ones(5, device="cuda")[torch.tensor([0, 2])]


def _cuda_index_into_cpu_tensor():
    torch.ones(5)[torch.tensor([0, 2], device="cuda")]


def _cpu_and_cuda_operands():
    torch.ones(3, device="cuda") * torch.ones(3)


def _cuda_result_into_cpu_tensor():
    torch.zeros(3).add_(torch.ones(3, device="cuda"))


def _cuda_state_into_cpu_generator():
    torch.Generator().set_state(torch.Generator(device="cuda").get_state())


def _cpu_state_into_cuda_generator():
    torch.Generator(device="cuda").set_state(torch.Generator().get_state())


def _state_on_cuda_into_generator():  # a checkpoint loaded with map_location="cuda", not moved back
    torch.Generator(device="cuda").set_state(torch.Generator(device="cuda").get_state().to("cuda"))


def _optimizer_state_on_cpu_for_cuda_parameters():
    layer = torch.nn.Linear(3, 1).to("cuda")
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(2, 3, device="cuda")).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    for slot in state["state"].values():
        slot["exp_avg"] = slot["exp_avg"].cpu()
    optimizer.state[layer.weight]["exp_avg"] = optimizer.state[layer.weight]["exp_avg"].cpu()
    layer(torch.ones(2, 3, device="cuda")).sum().backward()
    optimizer.step()


def _second_gpu_on_a_one_gpu_machine():
    torch.zeros(2, device="cuda:1")


def _rng_states_of_more_gpus_than_seen():
    torch.cuda.set_rng_state_all([torch.cuda.get_rng_state(0)] * 2)


def _checkpoint_of_a_second_gpu_loaded():
    buffer = io.BytesIO()
    with VirtualCuda(device_count=2):
        torch.save({"w": torch.ones(2, device="cuda:1")}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


PLANTED_BUGS = {
    "a CPU generator filling a CUDA tensor": (_cpu_generator_fills_cuda_tensor, VirtualDeviceError),
    "a CUDA generator filling a CPU tensor": (_cuda_generator_fills_cpu_tensor, VirtualDeviceError),
    ".numpy() of a CUDA tensor": (_numpy_of_cuda_tensor, TypeError),
    "np.asarray of a CUDA tensor": (_np_asarray_of_cuda_tensor, TypeError),
    "a CPU index into a CUDA tensor": (_cpu_index_into_cuda_tensor, VirtualDeviceError),
    "a CUDA index into a CPU tensor": (_cuda_index_into_cpu_tensor, VirtualDeviceError),
    "CPU and CUDA operands": (_cpu_and_cuda_operands, VirtualDeviceError),
    "a CUDA result written into a CPU tensor": (_cuda_result_into_cpu_tensor, VirtualDeviceError),
    "a CUDA state into a CPU generator": (_cuda_state_into_cpu_generator, RuntimeError),
    "a CPU state into a CUDA generator": (_cpu_state_into_cuda_generator, RuntimeError),
    "a generator state left on the GPU": (_state_on_cuda_into_generator, TypeError),
    "optimizer state on the CPU for CUDA parameters": (_optimizer_state_on_cpu_for_cuda_parameters, VirtualDeviceError),
    "cuda:1 on a one-GPU machine": (_second_gpu_on_a_one_gpu_machine, RuntimeError),
    "RNG states of more GPUs than are visible": (_rng_states_of_more_gpus_than_seen, IndexError),
    "a checkpoint of cuda:1 loaded on a one-GPU machine": (_checkpoint_of_a_second_gpu_loaded, RuntimeError),
}


@pytest.mark.parametrize("bug", list(PLANTED_BUGS))
def test_the_layer_catches_each_planted_bug(bug):
    plant, error = PLANTED_BUGS[bug]
    with VirtualCuda(device_count=1):
        with pytest.raises(error):
            plant()
    plant_on_cpu = plant is not _checkpoint_of_a_second_gpu_loaded
    if plant_on_cpu:  # outside the emulation torch itself refuses "cuda" here: the layer is what makes it run
        with pytest.raises((RuntimeError, AssertionError, TypeError)):
            plant()


def test_clean_cuda_code_reports_nothing_and_runs_as_on_the_cpu():
    """A training step written for a GPU: no error, no host sync, the same numbers as on the CPU, and a
    checkpoint that loads onto the CPU or back onto the GPU as map_location says."""
    def step(device):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        generator = torch.Generator(device=device)
        generator.manual_seed(1)
        data = torch.randn(32, 4, generator=generator, device=device)
        for _ in range(3):
            idx = torch.randint(32, (8,), generator=generator, device=device)
            loss = (net(data[idx]) ** 2).mean() * torch.tensor(2.0)  # a CPU 0-dim tensor may join CUDA ones
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return net, optimizer, loss

    cpu_net, _, cpu_loss = step("cpu")
    with VirtualCuda() as cuda:
        net, optimizer, loss = step("cuda")
        # the four parameters moved to the GPU once; the steps themselves never wait for the device
        assert cuda.syncs == {"host-to-device": 4} and loss.device == torch.device("cuda", 0) and net[0].weight.is_cuda
        assert optimizer.state[net[0].weight]["exp_avg"].device.type == "cuda"
        torch.testing.assert_close(loss.detach().cpu(), cpu_loss.detach())
        assert cuda.syncs == {"host-to-device": 4, "device-to-host": 1}
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        for map_location, expected in ((None, "cuda"), ("cpu", "cpu"), ("cuda", "cuda")):
            buffer.seek(0)
            loaded = torch.load(buffer, map_location=map_location, weights_only=True)
            assert {device_of(t).type for t in loaded.values()} == {expected}
    assert not torch.cuda.is_available() and torch.Generator is torch._C.Generator  # everything undone


def test_the_layer_counts_each_kind_of_host_sync():
    with VirtualCuda() as cuda:
        x = torch.arange(6.0, device="cuda")
        x.sum().item()
        x[x > 2]
        torch.nonzero(x)
        x.cpu()
        x.tolist()
        bool(x.any())
        torch.as_tensor(np.ones(3), device="cuda")
        assert cuda.syncs == {"item": 2, "boolean mask": 1, "nonzero": 1, "device-to-host": 1, "tolist": 1,
                              "host-to-device": 1}
        assert all(site.where.startswith(__file__) for site in cuda.sync_sites)


# -- every method on the virtual GPU, through the scripts ------------------------------------------------
def _train_argv(method, ballrun_file, logdir, **overrides):
    flags = dict(OWN_FLAGS.get(method, {}), **overrides)
    hparams = flags.pop("hparam", None)
    args = tiny_args(ballrun_file, logdir, **flags)
    if method != "lspc":  # the baselines have no latent
        i = args.index("--latent_dim")
        args = ["--algo", method, *args[:i], *args[i + 2:]]
    if hparams:
        args += ["--hparam", hparams]
    return args


def _train(method, argv):
    (train_lspc_iql.main if method == "lspc" else train_baseline.main)(argv)


@pytest.fixture
def syncs_per_step(monkeypatch):
    """Host syncs of every ``agent.train`` call, in order, whatever builds the agent."""
    counts = []

    def counting(make_agent):
        def make(self, *args, **kwargs):
            agent = make_agent(self, *args, **kwargs)
            train = agent.train

            def counted(batch):
                syncs = lambda: active().total_syncs if active() else 0  # noqa: E731 (0 on a real GPU)
                before = syncs()
                metrics = train(batch)
                counts.append(syncs() - before)
                return metrics

            agent.train = counted
            return agent
        return make

    monkeypatch.setattr(train_lspc_iql.LSPCMethod, "make_agent", counting(train_lspc_iql.LSPCMethod.make_agent))
    monkeypatch.setattr(BaselineMethod, "make_agent", counting(BaselineMethod.make_agent))
    monkeypatch.setattr(PluginMethod, "make_agent", counting(PluginMethod.make_agent))
    return counts


REAL_GPU = pytest.param("real", marks=[pytest.mark.cuda,
                                        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])
REAL_GPU_AND_SIMULATOR = pytest.param("real", marks=[*REAL_GPU.marks, needs_simulator])


def _gpu(kind, device_count=1):
    """The virtual GPU, or (kind "real") the machine's own."""
    return VirtualCuda(device_count) if kind == "virtual" else contextlib.nullcontext()


@pytest.mark.parametrize("gpu", ["virtual", REAL_GPU_AND_SIMULATOR])
@pytest.mark.parametrize("method", [*METHODS, pytest.param(PLUGIN, id="td3bc-lag")])
def test_every_method_trains_resumes_and_evaluates_on_a_gpu(method, gpu, ballrun_file, tmp_path, capsys,
                                                            syncs_per_step):
    """Train on the GPU with checkpoints between log points, resume on the GPU, resume on the CPU, then
    evaluate on the CPU and on the GPU: what a GPU sweep, a Slurm requeue and a laptop do to a run."""
    argv = _train_argv(method, ballrun_file, tmp_path / "logs", max_timesteps=10, eval_every=5, log_every=4,
                       device="cuda")
    with _gpu(gpu, device_count=2):
        _train(method, argv)
        (config,) = glob.glob(str(tmp_path / "logs" / "*" / "*" / "config.yaml"))
        run_dir = os.path.dirname(config)
        first = list(syncs_per_step)
        assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == 10
    with _gpu(gpu, device_count=1):  # requeued on a node that shows fewer GPUs
        _train(method, ["--resume", run_dir, "--max_timesteps", "15"])
        resumed = syncs_per_step[len(first):]
    _train(method, ["--resume", run_dir, "--max_timesteps", "20", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "written on cuda" in out and "random streams" in out  # the cross-device resume says what changed
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == 20
    # the same host syncs per step before and after a resume on the GPU
    assert len(first) == 10 and len(resumed) == 5
    assert collections.Counter(resumed) == collections.Counter(first[5:]), (first, resumed)
    if method == PLUGIN and gpu == "virtual":  # the example's own code: none at all
        assert set(first + resumed) == {0}, (first, resumed)
    eval_args = ["--path", run_dir, "--eval_episodes", "2", "--no_figures", "--cost_limits", "10"]
    eval_lspc.main([*eval_args, "--device", "cpu"])
    with _gpu(gpu):
        eval_lspc.main([*eval_args, "--device", "cuda"])
    with _gpu(gpu, device_count=2):  # back on the GPU: a checkpoint written on the CPU resumes there too
        _train(method, ["--resume", run_dir, "--max_timesteps", "25", "--device", "cuda"])
    assert "written on cpu" in capsys.readouterr().out
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == 25


@pytest.mark.parametrize("gpu", ["virtual", REAL_GPU])
@pytest.mark.parametrize("method", [*METHODS, pytest.param(PLUGIN, id="td3bc-lag")])
def test_every_method_trains_on_a_gpu_without_a_simulator_and_evaluates_on_the_cpu(method, gpu, ballrun_file, tmp_path,
                                                                                   capsys, monkeypatch, without_simulator):
    """The offline GPU node's run: trained and resumed on the GPU with evaluation off where no simulator can
    be made, then brought back and scored on the CPU where it can (on the node itself: loaded on the CPU)."""
    argv = _train_argv(method, ballrun_file, tmp_path / "logs", max_timesteps=6, eval_every=0, log_every=3,
                       device="cuda")
    with _gpu(gpu):
        _train(method, argv)
        (config,) = glob.glob(str(tmp_path / "logs" / "*" / "*" / "config.yaml"))
        run_dir = os.path.dirname(config)
        _train(method, ["--resume", run_dir, "--max_timesteps", "9"])
    monkeypatch.undo()  # back where the simulator is
    assert capsys.readouterr().out.count("in-training evaluation is off") == 2
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == 9
    if simulator_missing():  # the GPU node: the run goes back to be scored elsewhere
        return
    eval_lspc.main(["--path", run_dir, "--eval_episodes", "2", "--no_figures", "--device", "cpu"])
    with open(os.path.join(run_dir, "eval", "results.json")) as f:
        results = json.load(f)
    assert results["episodes"] == 2 and results["step"] == 9 and 10.0 in results["thresholds"]
    for policy in results["policies"].values():
        assert np.isfinite(policy["thresholds"]["10"]["normalized_reward"])


# -- host syncs per training step --------------------------------------------------------------------
SMALL_HPARAMS = {"cdt": {"augment_percent": 0}, "fisor": {"critic_batch_size": 32}}


@pytest.mark.parametrize("method", METHODS)
def test_host_syncs_per_step_on_the_gpu(method, ballrun_file):
    """None in LSPC, FISOR and TraC; in the osrl baselines only osrl's own (its .item() calls), none
    from our wrappers or torch.distributions' argument checks; the same count after a checkpoint."""
    with VirtualCuda():
        method_cfg = bench_methods.method_for(method, "OfflineBallRun-v0", ballrun_file, "cuda", batch_size=64,
                                              hparams=SMALL_HPARAMS.get(method))
        syncs = bench_methods.host_syncs(method_cfg, steps=2, warmup=1)
    assert syncs["after_resume"] == syncs["syncs_per_step"], syncs
    if method in ("lspc", "fisor", "trac"):
        assert syncs["syncs_per_step"] == 0, syncs
        return
    assert syncs["syncs_per_step"] >= 1  # osrl logs every loss with .item()
    for site in syncs["sites"]:
        assert "/site-packages/osrl/" in site and "torch/distributions" not in site, site


# -- RNG state and synchronization of the GPU a run trains on ----------------------------------------------
def test_a_two_gpu_nodes_rng_state_restores_on_a_one_gpu_node_and_on_the_cpu():
    with VirtualCuda(device_count=2):
        sampler = torch.Generator(device="cuda")
        sampler.manual_seed(1)
        state = capture_rng_state(torch.device("cuda:0"), sampler)
        expected = torch.rand(3, generator=sampler, device="cuda")
    assert state["cuda"].shape == (16,)  # the training GPU's state only
    with VirtualCuda(device_count=1):
        sampler = torch.Generator(device="cuda")
        assert restore_rng_state(state, torch.device("cuda"), sampler) == []
        assert torch.equal(torch.rand(3, generator=sampler, device="cuda").cpu(), expected.cpu())
    assert restore_rng_state(state, torch.device("cpu"), torch.Generator()) == ["the batch sampler's"]


@pytest.mark.parametrize("flags", [[], ["--seeds", "1", "2", "--batch_size", "64"]], ids=["single", "stacked"])
def test_bench_train_synchronizes_the_benchmarked_gpu(flags):
    bench_train = load_script("bench_train", "tools/bench")
    with VirtualCuda(device_count=2) as cuda:
        bench_train.main(["--device", "cuda:1", "--rounds", "1", "--steps", "2", *flags])
    waits = [site.op for site in cuda.sync_sites if site.kind == "synchronize"]
    assert waits and all(op.endswith("(cuda:1)") for op in waits), waits


# -- local GPU sweeps: a GPU of its own for each concurrent job -------------------------------------------
sweep = load_script("sweep")


def test_local_gpu_slots_split_the_visible_gpus(monkeypatch):
    assert sweep.local_gpu_slots(0) == []
    assert sweep.local_gpu_slots(1, ["0", "1", "2"]) == ["0", "1", "2"]
    assert sweep.local_gpu_slots(2, ["4", "5", "6", "7", "8"]) == ["4,5", "6,7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert sweep.local_gpu_slots(1) == ["3", "1"]
    with pytest.raises(sweep.LSPCError, match="needs at least that many GPUs"):
        sweep.local_gpu_slots(3)


class _Job:
    """A local job that finishes at the second poll after it started."""

    def __init__(self, job_id, job, run):
        self.job_id, self.job, self.run, self.polls = job_id, job, run, 0
        self.paths = type("Paths", (), {"stdout": "out", "stderr": "err"})()

    def done(self):
        self.polls += 1
        return self.polls >= 2

    def result(self):
        return "trained"


def test_concurrent_local_jobs_each_get_their_own_gpu(monkeypatch):
    started, env_of = [], {}

    class Executor:
        cluster = "local"

        def submit(self, job, run):
            running_gpus = [j.job.gpus for j in started if j.polls < 2]
            assert job.gpus not in running_gpus  # never a GPU a running job holds
            started.append(_Job(len(started), job, run))
            return started[-1]

    monkeypatch.setattr(sweep, "POLL_S", 0)
    runs = [sweep.Job((sweep.Run("T", "lspc", seed, 10.0, f"/runs/{seed}", None, f"seed {seed}"),), ("train",),
                      ("eval",), 1, f"seed {seed}") for seed in range(5)]
    assert sweep.execute(Executor(), runs, jobs=2, wait=True, gpu_slots=["0", "1"]) == []
    assert [job.job.gpus for job in started][:2] == ["0", "1"] and len(started) == 5
    assert {job.job.gpus for job in started} == {"0", "1"}
    # and the job's commands see only that GPU
    monkeypatch.setattr(sweep, "call", lambda cmd, env: env_of.setdefault(cmd[0], env["CUDA_VISIBLE_DEVICES"]) and 0)
    statuses = iter(["train", "evaluate", "done"])  # before the job, after its training, at its end
    monkeypatch.setattr(sweep, "run_status", lambda run: next(statuses))
    started[1].job(runs[1])
    assert env_of == {"train": "1", "eval": "1"}


# -- --deterministic ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lspc", "cdt"])
def test_deterministic_flag_switches_on_deterministic_algorithms_for_the_run(method, ballrun_file, tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    argv = _train_argv(method, ballrun_file, tmp_path, max_timesteps=2, eval_every=2, log_every=1)
    flag = ["--deterministic", "true"] if method == "lspc" else ["--deterministic"]
    config = (train_lspc_iql.load_config if method == "lspc" else train_baseline.load_config)([*argv, *flag])
    assert config.deterministic and not (train_lspc_iql.load_config if method == "lspc"
                                         else train_baseline.load_config)(argv).deterministic
    method_cls = train_lspc_iql.LSPCMethod if method == "lspc" else BaselineMethod
    make_agent = method_cls.make_agent

    def recording(self, *args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return make_agent(self, *args, **kwargs)

    monkeypatch.setattr(method_cls, "make_agent", recording)
    _train(method, [*argv, *flag])
    assert seen == [(True, ":4096:8")]
    assert not torch.are_deterministic_algorithms_enabled()  # the process's setting is given back

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny networks: one thread runs them fastest, and two threads per process on a busy 2-core machine
# (make test's two workers, or a job beside it) ran a 1,000-update SAC test 20x slower. Set before
# torch is imported, so this process and every script a test starts get one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from lspc.data.collect import collect, write_dsrl_hdf5  # noqa: E402


# The files with the longest tests (a few minutes each on 2 cores) run first: `make test` hands test
# files to its workers in collection order, and one of these started last would run on alone.
LONGEST_FIRST = ("test_sweep_all_methods.py", "test_cuda_emulation.py", "test_gpu_check.py", "test_faults.py",
                 "test_sweep.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a real CUDA GPU, skipped without one (tools/gpu_node/gpu_check.py runs them)")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def load_script(name, folder="scripts"):
    """scripts/ (or a maintainer tool's folder) is not a package: import a script by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses (and submitit's pickles) look their module up there
    spec.loader.exec_module(module)
    return module


def spread_critics(agent, critics, scale, targets, noise):
    """For the one-step reference tests: scale the critics' parameters, so that their outputs spread over a few
    units and a batch reaches every branch of the weights and clamps, and move each target network off its
    online one by N(0, noise^2) noise, so that a step that reads the wrong copy shows."""
    import torch

    with torch.no_grad():
        for name in critics:
            for p in getattr(agent, name).parameters():
                p.mul_(scale)
        for target, online in targets:
            for pt, p in zip(target.parameters(), online.parameters()):
                pt.copy_(p + noise * torch.randn_like(p))


def simulator_missing() -> str:
    """Why the BallRun tests cannot make their environment here ('' where Bullet Safety Gym is installed)."""
    from lspc.envs import simulator_missing as missing

    return missing("OfflineBallRun-v0")


@pytest.fixture
def without_simulator(monkeypatch):
    """Making any task's environment fails as it does where its simulator is not installed."""
    import lspc.envs

    def not_installed(suite):
        raise ModuleNotFoundError("No module named 'bullet_safety_gym'")

    monkeypatch.setattr(lspc.envs, "import_suite", not_installed)


needs_simulator = pytest.mark.skipif(bool(simulator_missing()), reason=simulator_missing() or "-")


@pytest.fixture(scope="session")
def ballrun_data():
    """12 BallRun episodes (1,200 transitions) collected from the real simulator; where it is not installed
    (the GPU node), the first 1,200 transitions of the file that LSPC_TEST_BALLRUN names."""
    if not simulator_missing():
        return collect("OfflineBallRun-v0", episodes=12, seed=0)
    if not os.environ.get("LSPC_TEST_BALLRUN"):
        pytest.skip(f"{simulator_missing()}; or set LSPC_TEST_BALLRUN to a BallRun hdf5 file")
    import h5py

    with h5py.File(os.environ["LSPC_TEST_BALLRUN"], "r") as f:
        return {key: f[key][:1200] for key in ("observations", "next_observations", "actions", "rewards", "costs",
                                               "terminals", "timeouts")}


@pytest.fixture(scope="session")
def ballrun_file(ballrun_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ballrun-tiny.hdf5"
    write_dsrl_hdf5(str(path), ballrun_data, {"task": "OfflineBallRun-v0", "seed": 0})
    return str(path)


def tiny_args(dataset: str, logdir, **overrides) -> list:
    """Command-line flags for a few-second training run on the tiny dataset."""
    flags = dict(task="OfflineBallRun-v0", dataset_path=dataset, logdir=str(logdir), max_timesteps=20,
                 batch_size=64, eval_every=10, log_every=5, eval_episodes=2, hidden_dim=32, latent_dim=8,
                 wandb_mode="disabled", device="cpu")
    flags.update(overrides)
    # the plain run's name, which the tests look the run up by (tests/test_cli.py covers automatic names)
    flags.setdefault("name", f"lspc_iql-seed{flags.get('seed', 0)}")
    return [token for key, value in flags.items() for token in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def ballrun_env():
    """The real BallRun environment, closed after the module."""
    from lspc.envs import make_env

    env = make_env("OfflineBallRun-v0")
    yield env
    env.close()

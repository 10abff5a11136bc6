"""Check that your method keeps the promises the shared loop relies on (docs/add-your-method.md).

    python -m lspc.check_method my_pkg.my_method:MyMethod [--task OfflineBallRun-v0] [--dataset_path FILE]
        [any other flag of scripts/train_baseline.py: --hparam NAME=VALUE, --hidden_dim N, --batch_size N ...]

Short versions of the tests this repository runs on its own methods, a few updates each at the
given flags (by default: BallRun, dsrl's dataset, batches of 64). One line per promise, ``ok`` or
``BROKEN`` with what a broken one breaks:

  resume   a state_dict round trip (as a checkpoint, read with weights_only=True) then the same updates
           gives the same metrics, weights and actions: else a resumed run is not the run it continues
  policy   ``act`` builds no autograd graph and draws its noise from the generator it is given only
  sampler  the sampler has its own generator (``sampler.generator``), seeded by cfg.seed, and leaves
           torch's global generator alone: else the checkpoint cannot save its stream
  device   on the virtual GPU (lspc.device_emulation) every tensor is where CUDA wants it, and the
           metrics stay on the device
  syncs    on the virtual GPU ``train`` makes no host synchronization
  run      a short run through the shared loop (run directory, evaluation, checkpoints), then the model
           rebuilt from the run's config.yaml and checkpoint as eval_lspc.py does

Exit status: 0 all kept, 1 one or more broken, 2 bad input (one ``error:`` line).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from lspc import LSPCError
from lspc.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from lspc.device_emulation import VirtualCuda, VirtualDeviceError, active
from lspc.envs import make_env
from lspc.methods.baselines import load_baseline_config, make_method, plugin_class
from lspc.training import NonFiniteLoss, check_loop_fields, seed_all, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a few updates on small batches; flags given after the import path replace these
DEFAULT_FLAGS = ["--task", "OfflineBallRun-v0", "--batch_size", "64", "--device", "cpu", "--wandb_mode", "disabled",
                 "--max_timesteps", "4", "--eval_every", "2", "--log_every", "2", "--eval_episodes", "1"]
STEPS = 3  # updates before the checkpoint, and again after it


def _train_baseline() -> Any:
    """scripts/train_baseline.py, whose flags build the config exactly as a run's."""
    spec = importlib.util.spec_from_file_location("train_baseline", os.path.join(ROOT, "scripts", "train_baseline.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class Checker:
    """The method at one config, its data loaded once; each ``check_*`` returns None or what is broken."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.env = make_env(cfg.task)
        method = make_method(cfg)
        check_loop_fields(method)
        self.data = method.load_data(self.env)

    def build(self, device: str = "cpu", **changes: Any) -> Tuple[Any, Any, Any]:
        """(method, sampler, agent) as the loop builds them, on ``device``."""
        method = make_method(dataclasses.replace(self.cfg, device=device, **changes))
        seed_all(method.cfg.seed)
        sampler = method.make_sampler(self.data, torch.device(device))
        return method, sampler, method.make_agent(self.env, torch.device(device), self.data)

    def updates(self, agent: Any, sampler: Any, steps: int) -> List[Dict[str, Any]]:
        return [agent.train(sampler.sample(self.cfg.batch_size)) for _ in range(steps)]

    def observations(self, device: str = "cpu") -> torch.Tensor:
        return torch.as_tensor(self.data["observations"][:8], dtype=torch.float32, device=device)

    def check_resume(self) -> Optional[str]:
        method, sampler, agent = self.build()
        self.updates(agent, sampler, STEPS)
        buffer = io.BytesIO()
        torch.save({"model": agent.state_dict(), "rng": capture_rng_state(agent.device, sampler.generator)}, buffer)
        straight = self.updates(agent, sampler, STEPS)
        buffer.seek(0)
        try:
            saved = torch.load(buffer, weights_only=True)
        except Exception as err:
            return (f"state_dict holds something torch.load(weights_only=True) refuses ({str(err).splitlines()[0]}): "
                    "a checkpoint cannot be read back; keep to tensors and plain values")
        resumed = method.make_agent(self.env, agent.device)  # without data, as a resume builds it
        resumed.load_state_dict(saved["model"])
        restore_rng_state(saved["rng"], agent.device, sampler.generator)
        after = self.updates(resumed, sampler, STEPS)
        generator = torch.Generator().manual_seed(0)
        actions = [a.act(self.observations(), generator.manual_seed(0)) for a in (agent.agent, resumed.agent)]
        difference = (_difference(straight, after, "the metrics") or
                      _difference(agent.state_dict(), resumed.state_dict(), "state_dict()") or
                      _difference(actions[0], actions[1], "the actions"))
        if difference:
            return (f"a resume is not bit-exact: {STEPS} updates after a state_dict round trip, {difference}; "
                    "state_dict misses something train uses (an optimizer, a counter, a generator)")
        return None

    def check_policy(self) -> Optional[str]:
        _, _, agent = self.build()
        before = torch.get_rng_state()
        actions = agent.agent.act(self.observations(), torch.Generator().manual_seed(0))
        if actions.requires_grad:
            return ("act builds an autograd graph (its actions require grad): every network's activations are kept "
                    "while acting; decorate it with @torch.no_grad()")
        if not torch.equal(before, torch.get_rng_state()):
            return ("act draws from torch's global generator: draw its noise from the generator it is given, or "
                    "evaluation episodes are not reproducible")
        expected = (8, self.env.action_space.shape[0])
        if tuple(actions.shape) != expected:
            return f"act returns actions of shape {tuple(actions.shape)} for 8 observations, expected {expected}"
        return None

    def check_sampler(self) -> Optional[str]:
        _, sampler, _ = self.build()
        if not isinstance(getattr(sampler, "generator", None), torch.Generator):
            return ("the sampler has no generator of its own (sampler.generator): the checkpoint cannot save its "
                    "stream, and a resumed run draws other batches")
        before = torch.get_rng_state()
        first = sampler.sample(self.cfg.batch_size)
        if not torch.equal(before, torch.get_rng_state()):
            return ("sampler.sample draws from torch's global generator, not from its own seeded sampler.generator: "
                    "the batches depend on whatever else drew from it")
        _, again, _ = self.build()
        torch.rand(7)  # another global state: the same seed must still give the same batches
        _, other, _ = self.build(seed=self.cfg.seed + 1)
        if _difference(first, again.sample(self.cfg.batch_size), "a batch"):
            return "the sampler draws other batches from the same seed: seed its generator with cfg.seed"
        if not _difference(first, other.sample(self.cfg.batch_size), "a batch"):
            return (f"the sampler draws the same batches for seeds {self.cfg.seed} and {self.cfg.seed + 1}: seed its "
                    "generator with cfg.seed")
        return None

    def _on_virtual_gpu(self) -> Tuple[List[Dict[str, Any]], List[List[str]]]:
        """Updates on the virtual GPU, a checkpoint round trip, an update more and acting: the metrics
        and each update's host syncs."""
        _, sampler, agent = self.build("cuda")
        syncs: List[List[str]] = []
        metrics = []
        for step in range(STEPS + 1):
            batch = sampler.sample(self.cfg.batch_size)
            before = len(active().sync_sites)
            metrics.append(agent.train(batch))
            syncs.append([f"{site.kind} at {site.where}" for site in active().sync_sites[before:]])
        buffer = io.BytesIO()
        torch.save(agent.state_dict(), buffer)
        buffer.seek(0)
        agent.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=True))  # as load_checkpoint does
        metrics.append(agent.train(sampler.sample(self.cfg.batch_size)))
        agent.agent.act(self.observations("cuda"), torch.Generator(device="cuda").manual_seed(0))
        return metrics, syncs[1:]  # the first update may set things up

    def check_device(self) -> Optional[str]:
        with VirtualCuda():
            try:
                metrics, _ = self._on_virtual_gpu()
            except VirtualDeviceError as err:
                return f"a tensor on the wrong device ({err}, {_where(err)}): a CUDA run stops there"
            for row in metrics:
                off = [name for name, value in row.items()
                       if not (isinstance(value, torch.Tensor) and value.device.type == "cuda")]
                if off:
                    return (f"train returns the metrics {off} off the GPU: the loop keeps them on the device to "
                            "check them without a host sync; return 0-dim tensors on the agent's device")
        return None

    def check_syncs(self) -> Optional[str]:
        with VirtualCuda():
            try:
                _, syncs = self._on_virtual_gpu()
            except VirtualDeviceError:
                return None  # the device check says why
        found = sorted({site for step in syncs for site in step})
        if found:
            return (f"train makes {sum(map(len, syncs)) / len(syncs):g} host syncs per update ({'; '.join(found)}): "
                    "each one stalls a GPU; keep values on the device (no .item(), float(), bool masks)")
        return None

    def check_run(self) -> Optional[str]:
        with tempfile.TemporaryDirectory() as logdir:
            cfg = dataclasses.replace(self.cfg, logdir=logdir)
            try:
                with _quiet():
                    run_dir = train(make_method(cfg))
            except NonFiniteLoss as err:
                return f"training diverged in {cfg.max_timesteps} updates ({err}): the loop stops such a run"
            rebuilt = make_method(load_baseline_config(os.path.join(run_dir, "config.yaml")))
            if rebuilt.cfg != cfg:
                return "config.yaml does not read back to the run's config: eval_lspc.py would rebuild another model"
            agent = rebuilt.make_agent(make_env(cfg.task), torch.device("cpu"))
            agent.load_state_dict(load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["model"])
        return None

    def close(self) -> None:
        self.env.close()


PROMISES: Tuple[Tuple[str, str, Callable[[Checker], Optional[str]]], ...] = (
    ("resume", "a state_dict round trip continues bit for bit", Checker.check_resume),
    ("policy", "act builds no graph and draws noise from its generator only", Checker.check_policy),
    ("sampler", "the sampler draws from its own generator, seeded by cfg.seed", Checker.check_sampler),
    ("device", "every tensor on the device CUDA wants (virtual GPU)", Checker.check_device),
    ("syncs", "train makes no host sync (virtual GPU)", Checker.check_syncs),
    ("run", "a short run through the loop, rebuilt from its config.yaml", Checker.check_run),
)


def _difference(a: Any, b: Any, path: str) -> Optional[str]:
    """Where two nested states first differ (tensors compared bit for bit), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path} has the keys {sorted(map(str, a))} before and {sorted(map(str, b))} after"
        return next(filter(None, (_difference(a[k], b[k], f"{path}[{k!r}]") for k in a)), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return next(filter(None, (_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))), None)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
        return None if same else f"{path} differs"
    return None if type(a) is type(b) and a == b else f"{path} differs ({a!r} against {b!r})"


def _where(err: BaseException) -> str:
    """The innermost frame of ``err`` outside torch and this repository's lspc/: the code to fix."""
    lspc_dir = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if "/torch/" not in f.filename and not f.filename.startswith(lspc_dir)]
    return f"at {frames[-1].filename}:{frames[-1].lineno}" if frames else "inside torch"


def check(path: str, flags: List[str]) -> List[Tuple[str, str, Optional[str]]]:
    """(promise, what it says, None or what is broken) for the plugin at ``path``; LSPCError on bad input."""
    if plugin_class(path) is None:
        raise LSPCError(f"{path!r} is one of ours; check_method checks a method of yours by its import path "
                        "module.sub:Class")
    with _quiet():
        cfg = _train_baseline().load_config(["--algo", path, *DEFAULT_FLAGS, *flags])
        checker = Checker(cfg)
    results = []
    try:
        for key, promise, run in PROMISES:
            try:
                with _quiet():
                    problem = run(checker)
            except Exception as err:  # the method's own code failed: say where
                problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} ({_where(err)})"
            results.append((key, promise, problem))
    finally:
        checker.close()
    return results


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print(__doc__.split("\n\n")[1])
        sys.exit(2)
    try:
        results = check(argv[0], argv[1:])
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for key, promise, problem in results:
        print(f"ok      {key}: {promise}" if problem is None else f"BROKEN  {key}: {problem}")
    broken = sum(problem is not None for *_, problem in results)
    print(f"{argv[0]}: {len(results) - broken} of {len(results)} promises kept")
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()

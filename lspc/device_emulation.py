"""Virtual CUDA: run the real code on the CPU while tracking the device every tensor and generator
would be on, so that the bugs a GPU run would hit show up in ``make test`` on a machine without one.

    with VirtualCuda(device_count=1) as cuda:
        ...  # code that asks for "cuda", unchanged
    cuda.syncs  # host synchronizations seen, by kind

What it models
- ``torch.cuda.is_available()`` is True; ``torch.cuda``'s RNG-state, seeding, synchronize, device and
  memory calls answer as on a machine with ``device_count`` GPUs (an ordinal past it fails as there).
- Every tensor created with ``device="cuda"``, moved with ``.to``/``.cuda``, loaded onto CUDA by
  ``torch.load``, or computed from such tensors is tagged CUDA. The tag lives on the tensor's storage,
  so views, ``.data``, ``state_dict()`` entries and in-place results share it. ``.device``, ``.is_cuda``,
  ``.is_cpu`` and ``.get_device()`` report the virtual device, so code sees what it would see on a GPU.
- CUDA's device rules at every aten op (forward, backward, optimizer steps, foreach kernels): tensors
  on different devices do not mix, except a CPU 0-dim tensor with CUDA ones and the copies themselves
  (``.to``, ``copy_``). A CPU index into a CUDA tensor is refused too: PyTorch accepts it, but it is an
  implicit blocking host-to-device copy on every call.
- ``.numpy()`` and ``np.asarray`` of a CUDA tensor fail as on a GPU.
- ``torch.Generator(device="cuda")`` is a virtual CUDA generator: its state is a 16-byte tensor as a
  CUDA generator's (seed and offset), and ``set_state`` takes only a CPU byte tensor of that size.
  Every ``generator=`` argument must be on the device type of the tensor it fills.
- ``torch.save`` records CUDA-tagged storages as ``cuda:N`` and ``torch.load`` puts them back per its
  ``map_location``, so a checkpoint written on the virtual GPU loads as one written on a GPU does.
- Kernel launches are counted by aten op (``launches``): every op on a CUDA tensor that a GPU runs as a
  kernel or a copy, i.e. all but views and allocations, and factory calls (``randn``, ``zeros``, ...) made
  on CUDA. A fused or foreach op counts once (a GPU may split it into a few kernels), a composite op as
  the ops it decomposes into: the count of what a step asks the GPU to run, not a profile.
- Host synchronizations are counted by kind: ``item`` (``.item()``, ``float()``, ``bool()`` of a CUDA
  tensor), ``tolist``, ``nonzero``, ``boolean mask`` (indexing with a bool tensor), ``masked_select``,
  ``unique``, ``device-to-host`` and blocking ``host-to-device`` copies, and ``synchronize``.

What it cannot see
- Kernels and numerics: every op runs on the CPU with CPU kernels and CPU rounding, and the CPU
  default generator stands in for CUDA's; nondeterministic CUDA kernels, TF32, out-of-memory errors
  and speed are invisible, and ops that exist only on one device are not checked.
- ``torch.compile`` and CUDA graphs (neither is emulated), streams, events, pinned memory and the
  overlap of asynchronous copies.
- Branches on ``device.type == "cuda"`` do run, but a CUDA-only API not listed above fails with
  torch's own "not compiled with CUDA" error instead of working.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Optional
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CPU = torch.device("cpu")
_TAG = "_virtual_device"  # attribute on a storage's (preserved) Python object
# A tensor that torch made inside an op from the options of some other tensor (a composite op's
# scalar, say): the Python API never saw it, so its device is whatever it is first used with. One
# that leaves a Python-level torch call unused was made on the default device, the CPU.
PENDING = "pending"
CUDA_STATE_BYTES = 16  # a CUDA generator's state: its seed and its Philox offset, 8 bytes each
_REAL_GENERATOR = torch.Generator
_ACTIVE: List["VirtualCuda"] = []
_SAVED_STATES: Dict[bytes, torch.Tensor] = {}  # 16-byte virtual state -> the CPU generator state behind it


class SyncSite(NamedTuple):
    """One host sync: its kind, the aten op or API, the innermost frame outside torch (the caller) and
    the innermost one inside torch (empty when the caller called the op directly)."""
    kind: str
    op: str
    where: str
    within_torch: str


class VirtualDeviceError(RuntimeError):
    """Code that a CUDA device would refuse (tensors on two devices, a generator on the wrong one)."""


def _tag(tensor: torch.Tensor) -> Any:
    """None (CPU), a CUDA ``torch.device``, or ``PENDING``."""
    with torch._C.DisableTorchFunction():
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (sparse, nested)
            return None
        return getattr(storage, _TAG, None)


def device_of(tensor: torch.Tensor) -> torch.device:
    """The virtual device of ``tensor`` (CPU unless tagged)."""
    tag = _tag(tensor)
    return tag if isinstance(tag, torch.device) else CPU


def _set_device(tensor: torch.Tensor, device: Any) -> None:
    """Tag ``tensor``'s storage with a CUDA device or ``PENDING``, or untag it (CPU)."""
    with torch._C.DisableTorchFunction():
        storage = tensor.untyped_storage()
        if device is PENDING or device.type == "cuda":
            setattr(storage, _TAG, device)
        elif hasattr(storage, _TAG):
            delattr(storage, _TAG)


def _settled(out: Any) -> Any:
    """A Python-level call's results: a pending one was made on the default device, the CPU."""
    with torch._C.DisableTorchFunction():
        for tensor in _tensors(out):
            if _tag(tensor) is PENDING:
                _set_device(tensor, CPU)
    return out


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage()._cdata == b.untyped_storage()._cdata


def _tensors(tree: Any) -> List[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def _cpu_state_token(cpu_state: torch.Tensor) -> torch.Tensor:
    """A 16-byte state standing for ``cpu_state`` (kept in a process-wide table, so a checkpoint written
    by one ``VirtualCuda`` context restores in another)."""
    token = hashlib.sha256(cpu_state.numpy().tobytes()).digest()[:CUDA_STATE_BYTES]
    _SAVED_STATES[token] = cpu_state.clone()
    return torch.frombuffer(bytearray(token), dtype=torch.uint8)


class _Generator(_REAL_GENERATOR):
    """``torch.Generator`` while a ``VirtualCuda`` is active: a CPU generator that knows its virtual device."""

    def __new__(cls, device: Any = "cpu") -> "_Generator":
        virtual = _ACTIVE[-1].device(device) if _ACTIVE else torch.device(device)
        generator = super().__new__(cls)
        generator._virtual = virtual
        return generator

    @property
    def device(self) -> torch.device:
        return self._virtual

    def get_state(self) -> torch.Tensor:
        state = super().get_state()
        return _cpu_state_token(state) if self._virtual.type == "cuda" else state

    def set_state(self, new_state: torch.Tensor) -> "_Generator":
        if device_of(new_state).type != "cpu" or new_state.dtype != torch.uint8:
            raise TypeError(f"expected a torch.ByteTensor, but got a {new_state.dtype} tensor on "
                            f"{device_of(new_state)}")
        if self._virtual.type != "cuda":
            super().set_state(new_state)  # a CPU generator refuses a CUDA state itself ("wrong size")
            return self
        if new_state.numel() != CUDA_STATE_BYTES:
            raise RuntimeError("RNG state is wrong size")
        token = bytes(new_state.tolist())
        if token in _SAVED_STATES:
            super().set_state(_SAVED_STATES[token])
        else:  # a state this process did not make (a real GPU's): its seed, deterministically
            self.manual_seed(int.from_bytes(token[:8], "little"))
        return self


# torch's own frames between a caller and this module: not where a sync comes from
_MACHINERY = ("/torch/_ops.py", "/torch/utils/_python_dispatch.py", "/torch/overrides.py", "/torch/_compile.py",
              "/torch/_dynamo/")
_SYNC_OPS = {"_local_scalar_dense": "item", "nonzero": "nonzero", "masked_select": "masked_select",
             "_unique": "unique", "_unique2": "unique", "unique_dim": "unique", "unique_consecutive": "unique",
             "equal": "item", "repeat_interleave": "nonzero"}
_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}
_NEW_OR_LIKE = {"new_tensor", "new_zeros", "new_ones", "new_full", "new_empty", "new_empty_strided",
                "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}
_FROM_DATA = {"tensor", "as_tensor", "asarray"}
# ops on CUDA tensors that launch no kernel: metadata only, or an allocation
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_unsafe_view", "detach",
              "alias", "set_", "resize_", "lift_fresh", "_reshape_alias", "as_strided"}


class _DeviceRules(TorchDispatchMode):
    """Every aten op: CUDA's device rules on its inputs, the device of its outputs, its host syncs."""

    def __init__(self, owner: "VirtualCuda") -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        with torch._C.DisableTorchFunction():
            inputs = _tensors((args, kwargs))
            tags = [_tag(t) for t in inputs]
            if name in ("_to_copy", "copy_", "copy"):
                return self._copy(func, name, args, kwargs, inputs, [device_of(t) for t in inputs])
            cuda = next((tag for tag in tags if isinstance(tag, torch.device)), None)
            if cuda is None:  # a CPU op; made from nothing or from pending tensors only, it is pending too
                out = func(*args, **kwargs)
                if all(tag is PENDING for tag in tags):
                    for tensor in _tensors(out):
                        if _tag(tensor) is None:
                            _set_device(tensor, PENDING)
                return out
            for tensor, tag in zip(inputs, tags):
                if tag is None and tensor.dim() > 0:
                    if name in _INDEX_OPS:
                        raise VirtualDeviceError(
                            f"aten.{name}: a CPU index tensor {tuple(tensor.shape)} into a {cuda} tensor "
                            f"(an implicit blocking host-to-device copy on every call); make the index on {cuda}")
                    raise VirtualDeviceError(
                        f"aten.{name}: expected all tensors to be on the same device, but found at least "
                        f"two devices, {cuda} and cpu (a {tuple(tensor.shape)} tensor)")
                if isinstance(tag, torch.device) and tag != cuda:
                    raise VirtualDeviceError(f"aten.{name}: expected all tensors to be on the same device, but "
                                             f"found at least two devices, {cuda} and {tag}")
            if not func.is_view and name not in _NO_KERNEL:
                self.owner.launches[name] += 1
            if name in _SYNC_OPS:
                self.owner._sync(_SYNC_OPS[name], name)
            elif name in _INDEX_OPS and any(t.dtype in (torch.bool, torch.uint8) for t in inputs[1:]):
                self.owner._sync("boolean mask", name)
            out = func(*args, **kwargs)
            for tensor, tag in zip(inputs, tags):
                if tag is PENDING:  # met the GPU: that is where torch made it
                    _set_device(tensor, cuda)
            for tensor in _tensors(out):
                if device_of(tensor) != cuda:
                    if _tag(tensor) is None and any(_same_storage(tensor, t) for t in inputs):
                        raise VirtualDeviceError(f"aten.{name}: writes a result computed on {cuda} into a "
                                                 f"CPU tensor {tuple(tensor.shape)}")
                    _set_device(tensor, cuda)
            return out

    def _copy(self, func, name, args, kwargs, inputs, devices):
        if name == "_to_copy":
            # The device of a _to_copy is the source's: torch's internals pass their input's options (a
            # CPU device here) along with a new dtype. Only a Python-level .to/.cpu (_DeviceApi) moves.
            source = devices[0]
            target = CPU if self.owner._to_host else source
            if source.type == "cuda":
                self.owner.launches[name] += 1
            if source.type == "cuda" and target.type == "cpu":
                self.owner._sync("device-to-host", name)
            out = func(*args, **kwargs)
            _set_device(out, target)
            return out
        destination, source = devices[0], devices[1]
        if "cuda" in (source.type, destination.type):
            self.owner.launches[name] += 1
        if source.type == "cuda" and destination.type == "cpu":
            self.owner._sync("device-to-host", name)
        elif source.type == "cpu" and destination.type == "cuda" and inputs[1].dim() > 0:
            self.owner._sync("host-to-device", name)
        out = func(*args, **kwargs)
        if name == "copy":  # the functional copy: a new tensor on the destination's device
            _set_device(out, destination)
        return out


class _DeviceApi(TorchFunctionMode):
    """The Python API: ``device=`` arguments, ``.to``/``.cuda``/``.cpu``, ``.device``, ``.numpy()``,
    ``.tolist()``, ``generator=`` arguments and deep copies."""

    def __init__(self, owner: "VirtualCuda") -> None:
        super().__init__()
        self.owner = owner
        T = torch.Tensor
        self.getters: Dict[Callable, Callable[[torch.Tensor], Any]] = {
            T.device.__get__: device_of,
            T.is_cuda.__get__: lambda t: device_of(t).type == "cuda",
            T.is_cpu.__get__: lambda t: device_of(t).type == "cpu",
            T.get_device: lambda t: device_of(t).index if device_of(t).type == "cuda" else -1,
        }
        self.to_numpy = {T.numpy, T.__array__}
        self.grad_getter = T.grad.__get__

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.getters:
            return self.getters[func](args[0])
        if func == self.grad_getter:  # (a method-wrapper: a new object at each attribute access)
            return self._grad(args[0], func(*args))
        if func in self.to_numpy and device_of(args[0]).type == "cuda":
            raise TypeError(f"can't convert {device_of(args[0])} device type tensor to numpy. Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.tolist and device_of(args[0]).type == "cuda":
            self.owner._sync("tolist", name)
            return func(*args, **kwargs)
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            return self._to(func, args, kwargs)
        if func is torch.Tensor.__deepcopy__:
            out = func(*args, **kwargs)
            _set_device(out, device_of(args[0]))
            return out
        self._check_generator(name, args, kwargs)
        if name in _FROM_DATA and isinstance(args[0], torch.Tensor):
            return self._from_tensor(name, args, kwargs)
        if kwargs.get("device") is not None:
            target = self.owner.device(kwargs["device"])
            out = func(*args, **{**kwargs, "device": CPU})
        elif name in _NEW_OR_LIKE and isinstance(args[0], torch.Tensor):
            target = device_of(args[0])
            out = func(*args, **kwargs)
        else:
            return _settled(func(*args, **kwargs))
        if target.type == "cuda" and (name in _FROM_DATA or name == "new_tensor"):
            self.owner._sync("host-to-device", name)
        if target.type == "cuda" and kwargs.get("device") is not None and name not in _NO_KERNEL | _FROM_DATA:
            self.owner.launches[name] += 1  # made on the CPU above, so _DeviceRules did not see it
        for tensor in _tensors(out):
            _set_device(tensor, target)
        return out

    def _grad(self, tensor: torch.Tensor, grad: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Autograd moves a 0-dim gradient to its input's device (a CPU scalar that met CUDA tensors)
        and refuses any other on the wrong device; the engine's move happens below the dispatcher."""
        if grad is None or device_of(grad) == device_of(tensor):
            return grad
        if grad.dim() != 0:
            raise VirtualDeviceError(f"invalid gradient: expected device {device_of(tensor)} but got {device_of(grad)}")
        if device_of(grad).type == "cuda":
            self.owner._sync("device-to-host", "autograd")
        _set_device(grad, device_of(tensor))
        return grad

    def _to(self, func, args, kwargs):
        tensor, rest = args[0], args[1:]
        if func is torch.Tensor.cpu:
            target, dtype, non_blocking, memory_format = CPU, None, False, None
        elif func is torch.Tensor.cuda:
            device = rest[0] if rest else kwargs.get("device")
            target = self.owner.device("cuda" if device is None else
                                       (f"cuda:{device}" if isinstance(device, int) else device))
            dtype, non_blocking, memory_format = None, kwargs.get("non_blocking", False), None
        else:
            parse_kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **parse_kwargs)
            other = next((a for a in rest if isinstance(a, torch.Tensor)), None)
            if other is not None:
                target = device_of(other)
            else:
                target = device_of(tensor) if device is None else self.owner.device(device)
        source = device_of(tensor)
        options = {"dtype": dtype or tensor.dtype, "non_blocking": non_blocking,
                   "copy": bool(kwargs.get("copy", False)) or target != source}
        if memory_format is not None:
            options["memory_format"] = memory_format
        self.owner._to_host = target.type == "cpu" and source.type == "cuda"  # _DeviceRules counts the copy
        try:
            out = torch.Tensor.to(tensor, **options)
        finally:
            self.owner._to_host = False
        if target != source:
            if source.type == "cpu":
                self.owner.launches["_to_copy"] += 1  # a host-to-device copy (_DeviceRules saw a CPU op)
            if source.type == "cpu" and not non_blocking:
                self.owner._sync("host-to-device", "to")
            _set_device(out, target)
        return out

    def _from_tensor(self, name, args, kwargs):
        """``torch.tensor`` / ``as_tensor`` / ``asarray`` of a tensor: ``.to`` (a copy for ``tensor``)."""
        source = args[0]
        device = kwargs.get("device")
        target = device_of(source) if device is None else self.owner.device(device)
        options = {"dtype": kwargs.get("dtype") or source.dtype, "copy": name == "tensor" or bool(kwargs.get("copy"))}
        out = self._to(torch.Tensor.to, (source, target), options)
        if kwargs.get("requires_grad"):
            out.requires_grad_(True)
        return out

    def _check_generator(self, name, args, kwargs):
        generator = kwargs.get("generator")
        if generator is None:
            generator = next((a for a in args if isinstance(a, _REAL_GENERATOR)), None)
        if generator is None:
            return
        if kwargs.get("device") is not None:
            target = self.owner.device(kwargs["device"])
        else:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            target = device_of(first) if first is not None else CPU
        if generator.device.type != target.type:
            raise VirtualDeviceError(f"{name}: expected a '{target.type}' device type for generator but found "
                                     f"'{generator.device.type}'")


_REAL_GROUPING = torch._C._group_tensors_by_device_and_dtype


def _group_by_virtual_device(tensorlistlist: List[List[Optional[torch.Tensor]]], with_indices: bool = False) -> Dict:
    """The foreach grouping of optimizers and ``clip_grad_norm_``, keyed by virtual devices (the real
    grouping sees CPU tensors only, and its keys become ``.to(device)`` targets)."""
    groups = _REAL_GROUPING(tensorlistlist, with_indices)
    keyed = {}
    for (_, dtype), value in groups.items():
        first = next(t for t in value[0][0] if t is not None) if value[0][0] else None
        keyed[(device_of(first) if first is not None else CPU, dtype)] = value
    return keyed


def active() -> Optional["VirtualCuda"]:
    """The innermost ``VirtualCuda`` in force, or None on a real device."""
    return _ACTIVE[-1] if _ACTIVE else None


class VirtualCuda:
    """A context in which ``cuda`` devices exist, emulated on the CPU (see the module's docstring).

    ``sync_sites`` lists the host synchronizations seen (``syncs`` counts them by kind), ``launches`` the
    kernel launches by aten op; ``reset_counts()`` starts a fresh count of both."""

    def __init__(self, device_count: int = 1) -> None:
        self.device_count = device_count
        self.sync_sites: List[SyncSite] = []
        self.launches: collections.Counter = collections.Counter()
        self._rng_states: Dict[int, torch.Tensor] = {}
        self._to_host = False  # a Python-level copy to the CPU is under way
        self._stack = contextlib.ExitStack()

    # -- devices -------------------------------------------------------------------------------------
    def device(self, device: Any) -> torch.device:
        device = torch.device(device)
        if device.type != "cuda":
            return device
        index = 0 if device.index is None else device.index
        if index >= self.device_count:
            raise RuntimeError(f"CUDA error: invalid device ordinal (cuda:{index} on a machine with "
                               f"{self.device_count} GPU{'s' if self.device_count != 1 else ''})")
        return torch.device("cuda", index)

    @property
    def syncs(self) -> collections.Counter:
        """Host syncs so far, by kind."""
        return collections.Counter(site.kind for site in self.sync_sites)

    @property
    def total_syncs(self) -> int:
        return len(self.sync_sites)

    def reset_counts(self) -> None:
        self.sync_sites.clear()
        self.launches.clear()

    def _sync(self, kind: str, op: str) -> None:
        stack = [f for f in traceback.extract_stack()[:-2] if not f.filename.endswith("device_emulation.py")]
        outside = [f for f in stack if "/torch/" not in f.filename]
        inside = [f for f in stack if "/torch/" in f.filename and not any(m in f.filename for m in _MACHINERY)]
        where = f"{outside[-1].filename}:{outside[-1].lineno}" if outside else "?"
        within = "torch/" + inside[-1].filename.split("/torch/", 1)[1] if inside else ""
        self.sync_sites.append(SyncSite(kind, op, where, within))

    # -- torch.cuda ----------------------------------------------------------------------------------
    def _index(self, device: Any = None) -> int:
        if device is None or device == "cuda":
            return 0
        if isinstance(device, int):
            return self.device(f"cuda:{device}").index
        return self.device(device).index

    def _get_rng_state(self, device: Any = "cuda") -> torch.Tensor:
        index = self._index(device)
        return self._rng_states.get(index, torch.zeros(CUDA_STATE_BYTES, dtype=torch.uint8)).clone()

    def _set_rng_state(self, new_state: torch.Tensor, device: Any = "cuda") -> None:
        index = self._index(device) if not isinstance(device, int) else device
        if index >= self.device_count:  # torch.cuda.default_generators[index]
            raise IndexError("tuple index out of range")
        if device_of(new_state).type != "cpu" or new_state.numel() != CUDA_STATE_BYTES:
            raise RuntimeError("RNG state is wrong size" if device_of(new_state).type == "cpu" else
                               "expected a torch.ByteTensor")
        self._rng_states[index] = new_state.clone()

    def _synchronize(self, device: Any = None) -> None:
        index = self._index(device)
        self._sync("synchronize", f"torch.cuda.synchronize({'current device' if device is None else f'cuda:{index}'})")

    def _patches(self) -> Dict[str, Any]:
        zero = lambda *args, **kwargs: 0  # noqa: E731
        nothing = lambda *args, **kwargs: None  # noqa: E731
        return {
            "is_available": lambda: True, "is_initialized": lambda: True, "device_count": lambda: self.device_count,
            "current_device": lambda: 0, "set_device": lambda device: self._index(device) and None,
            "get_device_name": lambda device=None: "virtual CUDA (emulated on the CPU)",
            "synchronize": self._synchronize,
            "get_rng_state": self._get_rng_state, "set_rng_state": self._set_rng_state,
            "get_rng_state_all": lambda: [self._get_rng_state(i) for i in range(self.device_count)],
            "set_rng_state_all": lambda states: [self._set_rng_state(s, i) for i, s in enumerate(states)] and None,
            "manual_seed": nothing, "manual_seed_all": nothing, "seed": nothing, "seed_all": nothing,
            "memory_allocated": zero, "max_memory_allocated": zero, "memory_reserved": zero,
            "max_memory_reserved": zero, "reset_peak_memory_stats": nothing, "empty_cache": nothing,
        }

    # -- torch.save / torch.load ---------------------------------------------------------------------
    def _storage_location(self, storage: Any) -> Optional[str]:
        storage = getattr(storage, "_untyped_storage", storage)
        device = getattr(storage, _TAG, None)
        return str(device) if device is not None else None

    def _restore_storage(self, storage: Any, location: str) -> Any:
        if not location.startswith("cuda"):
            return None
        device = torch.device(location)
        if (device.index or 0) >= self.device_count:
            raise RuntimeError(f"Attempting to deserialize object on CUDA device {device.index} but "
                               f"torch.cuda.device_count() is {self.device_count}")
        setattr(getattr(storage, "_untyped_storage", storage), _TAG, torch.device("cuda", device.index or 0))
        return storage

    # -- the context ---------------------------------------------------------------------------------
    def __enter__(self) -> "VirtualCuda":
        stack = self._stack
        for name, value in self._patches().items():
            stack.enter_context(mock.patch.object(torch.cuda, name, value))
        stack.enter_context(mock.patch.object(torch, "Generator", _Generator))
        stack.enter_context(mock.patch.object(torch._C, "_group_tensors_by_device_and_dtype", _group_by_virtual_device))
        package = (1, self._storage_location, self._restore_storage)
        torch.serialization._package_registry.append(package)
        torch.serialization._package_registry.sort(key=lambda entry: entry[0])
        stack.callback(torch.serialization._package_registry.remove, package)
        _ACTIVE.append(self)
        stack.callback(_ACTIVE.remove, self)
        stack.enter_context(_DeviceRules(self))
        stack.enter_context(_DeviceApi(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


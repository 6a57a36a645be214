"""Reuse the base network's activations in pruned copies of it.

Pruning one layer changes a few modules (the pruned conv, its consumers and their containers); every
other module computes exactly what the base computed whenever its input is the base's. So the base
runs once per batch with every module's call recorded, and in each pruned copy a module that pruning
left untouched returns the base's output when it is called with the very same input tensors. Its
callers then see the base's tensors too, so whole unchanged blocks, Detect branches and later blocks
are skipped without any knowledge of the architecture.

Safety rests on torch's version counters: a recorded call is reused only if its input tensors are the
same objects, unmodified since the base called it, and its output is unmodified since it was returned
(an in-place op anywhere, e.g. SiLU(inplace) on a conv output, invalidates the entry, which then just
recomputes). That needs autograd's counters, so run under torch.no_grad(), not inference_mode().
"""

from __future__ import annotations

import torch
import torch.nn as nn


class _Seq:
    """A list/tuple/dict frozen at call time (the caller may mutate the container afterwards)."""

    __slots__ = ("kind", "items")

    def __init__(self, kind, items):
        self.kind, self.items = kind, items


def _freeze(x):
    if isinstance(x, (list, tuple)):
        return _Seq(type(x), tuple(_freeze(i) for i in x))
    if isinstance(x, dict):
        return _Seq(dict, tuple((k, _freeze(v)) for k, v in x.items()))
    return x


def _thaw(x):
    if not isinstance(x, _Seq):
        return x
    if x.kind is dict:
        return {k: _thaw(v) for k, v in x.items}
    items = [_thaw(i) for i in x.items]
    return items if x.kind is list else tuple(items)


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, _Seq):
        items = (v for _, v in x.items) if x.kind is dict else x.items
        return [t for i in items for t in _tensors(i)]
    return []


def _same(live, frozen) -> bool:
    """`live` (call arguments) is structurally `frozen`, with the very same tensor objects."""
    if isinstance(frozen, torch.Tensor) or isinstance(live, torch.Tensor):
        return live is frozen
    if isinstance(frozen, _Seq):
        if frozen.kind is dict:
            return (
                isinstance(live, dict)
                and list(live) == [k for k, _ in frozen.items]
                and all(_same(live[k], v) for k, v in frozen.items)
            )
        if not isinstance(live, (list, tuple)):
            return False
        return len(live) == len(frozen.items) and all(_same(a, b) for a, b in zip(live, frozen.items))
    try:
        return bool(live == frozen)
    except Exception:  # objects without a plain truth value are not reused
        return False


class _Call:
    __slots__ = ("args", "arg_versions", "out", "out_versions")

    def __init__(self, args, arg_versions):
        self.args, self.arg_versions = args, arg_versions
        self.out = self.out_versions = None

    def reusable(self, args) -> bool:
        return (
            self.out_versions is not None
            and _same(args, self.args)
            and tuple(t._version for t in _tensors(self.args)) == self.arg_versions
            and tuple(t._version for t in _tensors(self.out)) == self.out_versions
        )


class Recorder:
    """Records every module call of `net`'s forward passes (the latest call of each module wins)."""

    def __init__(self, net: nn.Module, handles: list | None = None):
        self.calls: dict[str, _Call] = {}
        self.hits = self.misses = 0
        for name, m in net.named_modules():
            hooks = (m.register_forward_pre_hook(self._pre(name)), m.register_forward_hook(self._post(name)))
            if handles is not None:
                handles.extend(hooks)

    def _pre(self, name):
        def hook(module, args):
            frozen = _freeze(args)
            self.calls[name] = _Call(frozen, tuple(t._version for t in _tensors(frozen)))

        return hook

    def _post(self, name):
        def hook(module, args, out):
            call = self.calls[name]
            call.out = _freeze(out)
            call.out_versions = tuple(t._version for t in _tensors(call.out))

        return hook

    def clear(self):
        self.calls.clear()

    def nbytes(self) -> int:
        """Bytes of the distinct tensors the recorded calls hold (inputs and outputs), counted once each."""
        seen: dict[int, int] = {}
        for call in self.calls.values():
            for t in _tensors(call.args) + _tensors(call.out):
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values())


def bytes_per_image(net: nn.Module, imgsz: int) -> int:
    """What a Recorder on `net` holds per image of imgsz × imgsz: one recorded forward of one image (the
    memo grows linearly with the batch). `net` is left without the recording hooks."""
    handles: list = []
    recorder = Recorder(net, handles)
    p = next(net.parameters())
    x = torch.zeros(1, 3, imgsz, imgsz, device=p.device, dtype=p.dtype)
    try:
        with torch.no_grad():
            net(x.contiguous(memory_format=torch.channels_last))
        return recorder.nbytes()
    finally:
        for h in handles:
            h.remove()


def changed_modules(base: nn.Module, other: nn.Module) -> set[str]:
    """Names of the modules of `other` that differ from `base` (own tensors by shape and value, or
    settings as printed), and all their ancestors (a container runs its changed children)."""
    ref = dict(base.named_modules())
    changed = set()
    for name, m in other.named_modules():
        b = ref.get(name)
        same = (
            b is not None
            and type(b) is type(m)
            and b.extra_repr() == m.extra_repr()
            and _same_tensors({**b._parameters, **b._buffers}, {**m._parameters, **m._buffers})
        )
        if not same:
            parts = name.split(".") if name else []
            changed.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    return changed


def _same_tensors(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if (x is None) != (y is None):
            return False
        if x is not None and (x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y)):
            return False
    return True


def reuse(net: nn.Module, base: nn.Module, recorder: Recorder) -> nn.Module:
    """Make `net` (a pruned copy of `base`) reuse `recorder`'s calls of `base` in its unchanged modules."""
    changed = changed_modules(base, net)
    for name, m in net.named_modules():
        if name not in changed:
            m.forward = _reusing(m.forward, name, recorder)
    return net


def _reusing(forward, name: str, recorder: Recorder):
    def wrapped(*args, **kwargs):
        call = recorder.calls.get(name)
        if call is not None and not kwargs and call.reusable(args):
            recorder.hits += 1
            return _thaw(call.out)
        recorder.misses += 1
        return forward(*args, **kwargs)

    return wrapped

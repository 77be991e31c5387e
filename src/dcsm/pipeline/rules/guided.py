r"""Guided back-propagation (Springenberg et al. 2015), and dcsm's extension to smooth activations.

Through a rectifier, the ordinary backward is ``g_in = g_out * [x > 0]``; guided
back-propagation also drops negative gradients:

.. math::

    g_{in} = \max(g_{out}, 0) \cdot [x > 0]

and for ReLU6 (a rectifier clipped at 6) ``g_in = max(g_out, 0) * [0 < x < 6]``.

**Smooth and leaky activations (dcsm's definition).** Springenberg et al. define guided
back-propagation for ReLU only. Common implementations do no more: Captum's ``GuidedBackprop``
and pytorch-grad-cam's guided back-propagation override ``nn.ReLU`` modules only, so through a
GELU, SiLU or Hardswish network their "guided" gradients are plain gradients. dcsm generalises
the rule to any pointwise activation ``f`` as

.. math::

    g_{in} = f'(x) \cdot \max(g_{out}, 0)

the activation's own local derivative times the rectified incoming gradient. For ReLU
(``relu'(x) = [x > 0]``) and ReLU6 this is exactly Springenberg et al.'s rule. It covers GELU
(exact and ``approximate="tanh"``), SiLU (swish), Hardswish, Mish, ELU, CELU, SELU and LeakyReLU.
Note that GELU, SiLU, Mish and Hardswish are not monotonic: ``f'(x) < 0`` on part of the
negative axis (e.g. SiLU below x = -1.28, Hardswish on (-3, -1.5)), so, unlike through a ReLU,
the guided gradient out of such an activation can be negative there; dcsm keeps ``f'`` as it is
rather than inventing a mask. Activations written as arithmetic (``x * torch.sigmoid(x)``,
timm's ``QuickGELU``) are not recognised and stay plain, as are gates such as sigmoid and
hard-sigmoid in squeeze-excitation blocks.

Implementation: a :class:`torch.overrides.TorchFunctionMode` intercepts every recognised
activation call made while the rule is active:

* rectifiers (``nn.ReLU``, ``nn.ReLU6``, in-place or not, ``F.relu``, ``F.relu6``,
  ``F.hardtanh(x, 0, t)``, ``torch.relu``, ``Tensor.relu`` and their in-place ``_`` variants) are
  computed with an autograd function that carries the guided backward;
* smooth and leaky activations (``nn.GELU``/``F.gelu``, ``nn.SiLU``/``F.silu``,
  ``nn.Hardswish``/``F.hardswish``, ``nn.Mish``/``F.mish``, ``nn.ELU``/``F.elu``/``F.elu_``,
  ``nn.CELU``/``F.celu``/``torch.celu(_)``, ``nn.SELU``/``F.selu``/``torch.selu(_)``,
  ``nn.LeakyReLU``/``F.leaky_relu``/``F.leaky_relu_``, and the ``torch._C._nn`` builtins they
  call) are computed by the activation itself, so autograd records its exact ``f'``, and a tensor
  hook on the output clamps the incoming gradient at 0 before it reaches ``f'``. A hook rather
  than an identity autograd function: a custom function returning its input is a view, and
  PyTorch forbids the in-place updates (``x += shortcut``, a later in-place ReLU) that networks
  routinely apply to an activation's output.

The modules call these functions (``nn.GELU`` calls the builtin ``torch._C._nn.gelu``, which is
``F.gelu``; ``nn.SiLU`` calls ``F.silu``; timm's ``GELU`` layers call ``F.gelu``), so modules and
functional calls inside ``forward`` are covered alike. No hook is registered on any module and no
module is touched, so leaving the context (normally or by an exception) restores plain behaviour
completely. In-place calls are computed out of place and copied back (smooth activations on a
copy of their input, since their backward needs the input), so autograd never sees an activation
overwrite a tensor that the guided backward still needs. Calls that record no graph (under
``torch.no_grad()``, or on a tensor that does not require grad) run unchanged.

**The rule must not silently become plain.** After each ``with rule.active():`` block,
``GuidedRule.last_intercepted`` holds how many activation calls recorded a guided backward in it;
:func:`warn_if_unguided` turns a zero into a :class:`~dcsm.errors.DcsmWarning`, once per model.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dcsm.errors import DcsmWarning
from dcsm.pipeline.rules.base import BackpropRule

#: The activations the guided rule knows, as named in warnings and documentation.
KNOWN_ACTIVATIONS: tuple[str, ...] = (
    "ReLU", "ReLU6", "hardtanh(0, t)", "GELU", "SiLU", "Hardswish", "Mish", "ELU", "CELU", "SELU",
    "LeakyReLU",
)


class _GuidedRectifier(torch.autograd.Function):
    """clamp(x, 0, upper) forward; guided backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, upper: float | None) -> torch.Tensor:
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ANN401
        x, upper = inputs
        mask = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(mask)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        (mask,) = ctx.saved_tensors
        return grad.clamp(min=0).mul_(mask), None  # in place: no float copy of the mask


def guided_relu(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """``clamp(x, 0, upper)`` whose backward is guided."""
    out: torch.Tensor = _GuidedRectifier.apply(x, upper)
    return out


def _rectify_grad(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


def guided_activation(func: Callable[..., torch.Tensor], x: torch.Tensor,
                      *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: ANN401
    """``func(x, *args, **kwargs)`` (out of place) whose backward is ``f'(x) * max(g, 0)``.

    For functions the rule does not intercept, or outside a rule; inside an active
    :class:`GuidedRule` a known activation is intercepted as well, and clamping the gradient twice
    changes nothing.
    """
    y = func(x, *args, **kwargs)
    if y.requires_grad:
        y.register_hook(_rectify_grad)
    return y


# --------------------------------------------------------------------------- recognising calls
def _relu_upper(func: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[bool, float | None, bool]:
    """(is a rectifier, its upper clip, in place) for an intercepted call."""
    if func in (F.relu, torch.relu, torch.Tensor.relu):
        return True, None, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (torch.relu_, torch.Tensor.relu_, F.relu_):
        return True, None, True
    if func is F.relu6:
        return True, 6.0, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (F.hardtanh, F.hardtanh_):
        lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        inplace = func is F.hardtanh_ or bool(
            kwargs.get("inplace", args[3] if len(args) > 3 else False))
        if lo == 0 and hi > 0:
            return True, float(hi), inplace
    return False, None, False


_nn: Any = torch._C._nn

# Python functionals with an ``inplace`` parameter, and their signatures (for binding).
_WITH_INPLACE_FLAG: dict[Any, inspect.Signature] = {
    f: inspect.signature(f)
    for f in (F.silu, F.hardswish, F.mish, F.elu, F.celu, F.selu, F.leaky_relu)
}
# Builtins computing out of place (F.gelu is the builtin torch._C._nn.gelu).
_OUT_OF_PLACE: frozenset[Any] = frozenset({
    F.gelu, _nn.gelu, _nn.silu, _nn.hardswish, _nn.mish, _nn.elu, _nn.leaky_relu,
    torch.celu, torch.selu,
})
# In-place builtins and their out-of-place twins with the same arguments
# (F.elu_, F.celu_, F.selu_ and F.leaky_relu_ are among them).
_IN_PLACE: dict[Any, Any] = {
    _nn.silu_: _nn.silu, _nn.hardswish_: _nn.hardswish, _nn.mish_: _nn.mish, _nn.elu_: _nn.elu,
    _nn.leaky_relu_: _nn.leaky_relu, torch.celu_: torch.celu, torch.selu_: torch.selu,
}


def _smooth_call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any, bool] | None:
    """For a smooth or leaky activation call: (the call out of place on a given input, the
    call's input, whether the call is in place). None when ``func`` is not one of them."""
    if func in _WITH_INPLACE_FLAG:
        try:
            bound = _WITH_INPLACE_FLAG[func].bind(*args, **kwargs)
        except TypeError:
            return None  # let the function itself report the bad call
        x = bound.arguments.get("input")
        inplace = bool(bound.arguments.get("inplace", False))

        def call_bound(t: torch.Tensor) -> torch.Tensor:
            bound.arguments["input"] = t
            bound.arguments["inplace"] = False
            out: torch.Tensor = func(*bound.args, **bound.kwargs)
            return out

        return call_bound, x, inplace
    if func not in _OUT_OF_PLACE and func not in _IN_PLACE:
        return None
    twin = _IN_PLACE.get(func, func)
    key: str | None = next((k for k in ("input", "self") if k in kwargs), None)
    if args:
        def call_builtin(t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = twin(t, *args[1:], **kwargs)
            return out

        return call_builtin, args[0], func in _IN_PLACE
    if key is None:
        return None
    named = key

    def call_named(t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = twin(**{**kwargs, named: t})
        return out

    return call_named, kwargs[named], func in _IN_PLACE


def _records_graph(x: Any) -> bool:  # noqa: ANN401
    return isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad


class _GuidedMode(TorchFunctionMode):
    """Computes recognised activations with the guided backward; counts them in ``intercepted``.

    While ``__torch_function__`` runs, the mode is off, so the calls it makes (the activation
    itself, and whatever an ``F`` function calls inside) are not intercepted again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.intercepted = 0

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),  # noqa: ANN401,E501
                           kwargs: dict[str, Any] | None = None) -> Any:  # noqa: ANN401
        kwargs = kwargs or {}
        is_rectifier, upper, inplace = _relu_upper(func, args, kwargs)
        if is_rectifier:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not _records_graph(x):
                return func(*args, **kwargs)
            self.intercepted += 1
            out = guided_relu(x, upper)
            return x.copy_(out) if inplace else out
        smooth = _smooth_call(func, args, kwargs)
        if smooth is None or not _records_graph(smooth[1]):
            return func(*args, **kwargs)
        call, x, inplace = smooth
        self.intercepted += 1
        # In place: the activation's backward needs its input, which copy_ then overwrites, so
        # it runs on a copy; copy_ records the write into x for autograd.
        out = call(x.clone() if inplace else x)
        out.register_hook(_rectify_grad)
        return x.copy_(out) if inplace else out


# --------------------------------------------------------------------------- the rule
class GuidedRule(BackpropRule):
    """Guided back-propagation: ``g_in = f'(x) * max(g_out, 0)`` through every known activation.

    ReLU, ReLU6 and ``hardtanh(x, 0, t)`` (Springenberg et al.'s rule), and GELU, SiLU,
    Hardswish, Mish, ELU, CELU, SELU, LeakyReLU (dcsm's generalisation; see the module docs).

    Attributes:
        last_intercepted: after a ``with rule.active():`` block (also one left by an exception),
            the number of activation calls in it that recorded a guided backward; None before
            the first block. Zero means the block's gradients are plain ones: pass it to
            :func:`warn_if_unguided`.
    """

    name = "guided"

    def __init__(self) -> None:
        self.last_intercepted: int | None = None

    def _enter(self) -> contextlib.AbstractContextManager[None]:
        return _counting_block(self)


@contextlib.contextmanager
def _counting_block(rule: GuidedRule) -> Iterator[None]:
    mode = _GuidedMode()
    try:
        with mode:
            yield
    finally:
        rule.last_intercepted = mode.intercepted


# --------------------------------------------------------------------------- warning
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def warn_if_unguided(count: int, model_name: str) -> None:
    """Warn (:class:`~dcsm.errors.DcsmWarning`, once per model name and process) when guided
    back-propagation intercepted no activation (``count == 0``): its maps are plain gradients."""
    if count > 0:
        return
    with _WARNED_LOCK:
        if model_name in _WARNED:
            return
        _WARNED.add(model_name)
    warnings.warn(
        f"guided back-propagation found no activation it knows ({', '.join(KNOWN_ACTIVATIONS)}) "
        f"between the layers and the class scores of model {model_name}: its maps are plain "
        "gradients",
        DcsmWarning,
        stacklevel=2,
    )

"""Attribution of a contact-map target to a model's input, per window, and genome-wide stitching.

A *target* (:mod:`screening.maps.targets`) turns the predicted map into one number per
window; this module attributes it to every input base and track value with saliency,
input × gradient, integrated gradients or DeepLIFT(-SHAP) (captum where it fits), and
returns numpy arrays in the package's conventions: sequence ``float32 [B, L, 4]`` in
``A, C, G, T`` order and tracks ``float32 [B, T, L]``. Windows are attributed
independently (the model is in eval mode), so a batch of windows gives the same
result as one window at a time.

:func:`tile_windows` plans overlapping windows over a region and :func:`stitch`
assembles per-window arrays into one seamless per-base array. Methods, baselines,
diagnostics and the stitching rule are described in ``docs/attribution.md``.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from screening.core.errors import ScreeningError
from screening.models.base import InputLayout, ModelAdapter, ModelError  # InputLayout re-exported: part of this module's API
from screening.perturb.edits import dinucleotide_shuffle
from screening.perturb.kinds import kind_of

if TYPE_CHECKING:
    from screening.spec import ScreenSpec

__all__ = [
    "BASELINES",
    "INTEGRATIONS",
    "METHODS",
    "TRACK_BASELINES",
    "Attribution",
    "AttributionError",
    "InputLayout",
    "check_attributions",
    "attribute",
    "check_deeplift",
    "check_model",
    "checkpoint_blocks",
    "checkpointing",
    "gradient_correction",
    "input_layout",
    "stitch",
    "tile_windows",
]

METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "deeplift", "deeplift_shap")
"""Attribution methods understood by :func:`attribute`."""

BASELINES = ("zeros", "uniform", "shuffle")
"""Reference inputs for integrated gradients and DeepLIFT (applied to the sequence channels)."""

TRACK_BASELINES = ("unchanged", "zeros")
"""What the track channels of a baseline hold."""

INTEGRATIONS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")
"""Quadrature rules for integrated gradients (captum's names)."""

_BASELINE_METHODS = ("integrated_gradients", "deeplift", "deeplift_shap")

Target = Callable[[torch.Tensor], torch.Tensor]


class AttributionError(ScreeningError, ValueError):
    """An attribution that cannot be computed as asked (method, model or layout)."""


# --- input layout -------------------------------------------------------------------------


def input_layout(adapter: ModelAdapter) -> InputLayout:
    """The adapter's input layout (the ``sequence_channels`` / ``track_channels`` hook).

    An adapter declares its layout with an ``input_layout`` attribute (an
    :class:`InputLayout`, or a method returning one). :class:`CorigamiAdapter` needs
    none: its input is ``[B, L, 5 + T]`` with DNA channels ``A, T, C, G, N`` then tracks.

    Raises
    ------
    AttributionError
        For an adapter without a known layout.
    """
    declared = getattr(adapter, "input_layout", None)
    if declared is not None:
        return InputLayout(*(declared() if callable(declared) else declared))
    from screening.models.corigami import DNA_ORDER, CorigamiAdapter

    if isinstance(adapter, CorigamiAdapter):
        n_dna = len(DNA_ORDER)
        return InputLayout(
            sequence=tuple(DNA_ORDER.index(base) for base in "ACGT"),  # type: ignore[arg-type]
            tracks=tuple(range(n_dna, n_dna + adapter.config.num_genomic_features)),
            length_axis=1,
            n=DNA_ORDER.index("N"),
        )
    raise AttributionError(
        f"adapter {type(adapter).__name__} declares no input layout; give it an `input_layout` "
        "attribute (screening.interpret.attribution.InputLayout)"
    )


def _check_layout(layout: InputLayout, inputs: torch.Tensor) -> None:
    if inputs.ndim != 3 or layout.length_axis not in (1, 2):
        raise AttributionError(
            f"inputs must be [B, ·, ·] with positions on axis 1 or 2, got {tuple(inputs.shape)} "
            f"and length_axis {layout.length_axis}"
        )
    n_channels = inputs.shape[3 - layout.length_axis]
    used = [*layout.sequence, *layout.tracks, *([layout.n] if layout.n is not None else [])]
    if len(layout.sequence) != 4 or len(set(used)) != len(used) or not all(0 <= c < n_channels for c in used):
        raise AttributionError(f"layout {layout} does not fit an input with {n_channels} channels")


def _channels_last(x: torch.Tensor, layout: InputLayout) -> torch.Tensor:
    """A ``[B, L, C]`` view of an input-shaped tensor."""
    return x if layout.length_axis == 1 else x.transpose(1, 2)


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Attribution:
    """Attributions of one target for a batch of windows.

    Attributes
    ----------
    sequence
        ``float32 [B, L, 4]``, bases in ``A, C, G, T`` order.
    sequence_corrected
        ``float32 [B, L, 4]``: ``sequence`` minus its mean over the 4 bases at each
        position (Majdandzic et al. 2023); sums to 0 per position.
    tracks
        ``float32 [B, T, L]``; ``None`` for sequence-only models, and for baseline
        methods with ``track_baseline="unchanged"`` (their track attribution is then 0).
    target
        ``float64 [B]``: the target's value for each window's input.
    completeness_error
        ``float64 [B]`` for integrated gradients and DeepLIFT: ``Σ attributions −
        (target(input) − mean target(baseline))``; ``None`` otherwise.
    method
        A name from :data:`METHODS`.
    params
        The method's settings (target, baseline, steps, ...), for provenance.
    sequence_n
        ``float32 [B, L]``: attribution to the input's own N channel (C.Origami has one),
        else ``None``.
    """

    sequence: np.ndarray
    sequence_corrected: np.ndarray
    tracks: np.ndarray | None
    target: np.ndarray
    completeness_error: np.ndarray | None
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    sequence_n: np.ndarray | None = None


def gradient_correction(values: np.ndarray) -> np.ndarray:
    """Subtract the mean over the last axis (the 4 bases) at each position.

    Majdandzic, Rajesh & Koo (Genome Biology 2023): gradients of a one-hot input have an
    arbitrary component orthogonal to the simplex the data lives on; removing the
    per-position mean removes it.

    Parameters
    ----------
    values
        ``[..., 4]`` gradients or attributions.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype; sums to 0 along the last axis.
    """
    values = np.asarray(values)
    return values - values.mean(axis=-1, keepdims=True, dtype=np.float64).astype(values.dtype)


# --- model state for attribution ----------------------------------------------------------


@contextmanager
def _inputs_only(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored after."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def checkpoint_blocks(module: nn.Module) -> list[str]:
    """Names of the blocks :func:`checkpointing` wraps by default.

    Every ``nn.Sequential`` / ``nn.ModuleList`` whose children are composite modules
    contributes each child (e.g. C.Origami's encoder blocks, transformer layers and
    decoder blocks); a ``nn.Sequential`` of leaf modules (a conv-BN-ReLU stem) is one
    block. Lone leaf modules are not wrapped: they would save the same tensors.
    """
    blocks: list[str] = []

    def visit(prefix: str, parent: nn.Module) -> None:
        for name, child in parent.named_children():
            full = prefix + name
            children = list(child.named_children())
            if not children:
                continue
            if isinstance(child, (nn.Sequential, nn.ModuleList)):
                composite = [n for n, c in children if any(True for _ in c.children())]
                if composite:
                    blocks.extend(f"{full}.{n}" for n in composite)
                elif isinstance(child, nn.Sequential):
                    blocks.append(full)
            else:
                visit(full + ".", child)

    visit("", module)
    return blocks


def _checkpointed_call(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return _torch_checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextmanager
def checkpointing(module: nn.Module, blocks: Sequence[str] | None = None) -> Iterator[list[str]]:
    """Activation checkpointing of ``module``'s blocks for the duration.

    Each block's forward is replaced by ``torch.utils.checkpoint`` (non-reentrant) of
    itself: only block inputs are kept for the backward pass and each block is
    recomputed once during it (about one extra forward), trading time for memory. The
    model's code is not touched; the original forwards come back on exit.

    Parameters
    ----------
    module
        The model.
    blocks
        Dotted submodule names; default :func:`checkpoint_blocks`.

    Yields
    ------
    list[str]
        The wrapped block names.
    """
    names = list(checkpoint_blocks(module) if blocks is None else blocks)
    lookup = dict(module.named_modules())
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise AttributionError(f"checkpoint blocks {unknown} are not submodules of {type(module).__name__}")
    saved = [(lookup[n], lookup[n].__dict__.get("forward")) for n in names]
    try:
        for block, _ in saved:
            block.forward = functools.partial(_checkpointed_call, block.forward)
        yield names
    finally:
        for block, previous in saved:
            if previous is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = previous


# --- DeepLIFT support check ---------------------------------------------------------------

# Modules that are affine in their input in eval mode: DeepLIFT's chain rule holds through them.
_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.Sequential, nn.ModuleList, nn.ModuleDict,
)  # fmt: skip

# Functions that are non-linear in a (single) input-dependent argument.
_NONLINEAR_FUNCS = frozenset(
    "relu relu6 gelu silu mish elu selu celu leaky_relu prelu rrelu hardtanh hardswish hardsigmoid sigmoid "
    "tanh softplus softsign tanhshrink softshrink hardshrink threshold glu logsigmoid softmax log_softmax "
    "softmin layer_norm group_norm instance_norm rms_norm local_response_norm normalize "
    "multi_head_attention_forward scaled_dot_product_attention exp exp2 expm1 log log2 log10 log1p sqrt "
    "rsqrt pow rpow square abs sign clamp clip clamp_min clamp_max maximum minimum max min amax amin "
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
    "max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d sin cos erf "
    "reciprocal rtruediv rdiv norm std var logsumexp cumprod prod sort topk".split()
)
# Functions that are non-linear when two or more arguments depend on the input.
_PRODUCT_FUNCS = frozenset(
    "mul rmul matmul rmatmul bmm mm mv dot einsum baddbmm addbmm addmm addcmul outer bilinear kron "
    "tensordot".split()
)
_DIVISION_FUNCS = frozenset({"div", "truediv", "floor_divide"})


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _is_supported(module: nn.Module) -> bool:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return type(module) in SUPPORTED_NON_LINEAR  # captum matches exact types, not subclasses


class _NonlinearRecorder(TorchFunctionMode):
    """Records input-dependent non-linear torch calls made outside captum-supported modules."""

    def __init__(self, stack: list[tuple[str, nn.Module]], found: list[tuple[str, str]]) -> None:
        super().__init__()
        self.stack, self.found = stack, found

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if not any(_is_supported(m) for _, m in self.stack):
            name = getattr(func, "__name__", str(func)).strip("_")
            dependent = [t for t in _tensors((args, kwargs)) if t.requires_grad]
            divisor = args[1] if len(args) > 1 else None
            if (
                (name in _NONLINEAR_FUNCS and dependent)
                or (name in _PRODUCT_FUNCS and len(dependent) >= 2)
                or (name in _DIVISION_FUNCS and isinstance(divisor, torch.Tensor) and divisor.requires_grad)
            ):
                where, module = self.stack[-1] if self.stack else ("", None)
                owner = type(module).__name__ if module is not None else "the target"
                self.found.append((f"functional {name} in {owner}", where or "<top>"))
        return func(*args, **kwargs)


def _static_problems(module: nn.Module) -> list[tuple[str, str]]:
    """torch.nn modules that are neither affine nor given a rule by captum."""
    found, skip = [], ()
    for name, m in module.named_modules():
        if skip and name.startswith(skip):
            continue
        if _is_supported(m) or isinstance(m, _LINEAR_MODULES) or not type(m).__module__.startswith("torch.nn"):
            continue
        found.append((type(m).__name__, name))
        skip = (name + ".",)  # its own children are part of the same problem
    return found


def _probe_problems(adapter: ModelAdapter, target: Target, sample: torch.Tensor) -> list[tuple[str, str]]:
    """Run one window and record non-linear functional calls and reused nonlinearity modules."""
    stack: list[tuple[str, nn.Module]] = []
    found: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    handles = []
    for name, m in adapter.module.named_modules():

        def push(mod: nn.Module, _args: Any, name: str = name) -> None:
            stack.append((name, mod))
            if _is_supported(mod):
                calls[name] = calls.get(name, 0) + 1

        def pop(_mod: nn.Module, _args: Any, _out: Any) -> None:
            stack.pop()

        handles += [m.register_forward_pre_hook(push), m.register_forward_hook(pop)]
    try:
        with torch.enable_grad(), _NonlinearRecorder(stack, found):
            target(adapter.forward(sample.detach().requires_grad_(True)))
    finally:
        for handle in handles:
            handle.remove()
    types = {name: type(m).__name__ for name, m in adapter.module.named_modules()}
    return found + [(f"{types[n]} called {k} times per forward", n) for n, k in calls.items() if k > 1]


def _describe(problems: list[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for what, where in problems:
        grouped.setdefault(what, []).append(where)
    parts = []
    for what, wheres in grouped.items():
        more = f" and {len(wheres) - 1} more" if len(wheres) > 1 else ""
        parts.append(f"{what} ({wheres[0]}{more})")
    return "; ".join(parts)


def check_deeplift(adapter: ModelAdapter, inputs: torch.Tensor, target: Target) -> None:
    """Refuse models that captum's DeepLIFT rules do not cover.

    captum gives DeepLIFT rules to the nonlinearity *modules* ReLU, ELU, LeakyReLU,
    Sigmoid, Tanh, Softplus, MaxPool and Softmax, each called once per forward, and
    treats everything else as linear. Affine modules and operations (convolutions,
    eval-mode batch norm, residual additions, concatenation) are exact under that
    treatment; anything else would silently give wrong multipliers. Two checks:
    torch.nn modules that are neither (``MultiheadAttention``, ``LayerNorm``, ``GELU``,
    ...) and, on one window, functional non-linear calls (``torch.relu``, ``softmax``,
    products of two input-dependent tensors) made outside a supported module, or a
    supported module called twice.

    Raises
    ------
    AttributionError
        Naming each unsupported module type or call and where it sits.
    """
    with _inputs_only(adapter.module):  # frozen parameters: "requires grad" then means "depends on the input"
        problems = _static_problems(adapter.module) or _probe_problems(adapter, target, inputs[:1])
    if problems:
        raise AttributionError(
            f"DeepLIFT (captum) has no rule for: {_describe(problems)}. Its rules cover only the modules "
            "ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus, MaxPool and Softmax, each called once; "
            "use integrated_gradients for this model"
        )


def check_model(adapter: ModelAdapter, method: str) -> None:
    """What can be checked of ``method`` on a model before any window is read.

    The adapter must declare its input layout, and DeepLIFT methods must meet no torch.nn
    module without a DeepLIFT rule (e.g. C.Origami's attention): the static half of
    :func:`check_deeplift`, cheap enough to run before a screen's store is created.

    Raises
    ------
    AttributionError
        Naming the missing layout or each unsupported module.
    """
    input_layout(adapter)
    if method in ("deeplift", "deeplift_shap"):
        problems = _static_problems(adapter.module)
        if problems:
            raise AttributionError(
                f"{method}: DeepLIFT (captum) has no rule for: {_describe(problems)}; use integrated_gradients for "
                "this model"
            )


class _TargetNet(nn.Module):
    """``input → target(adapter.forward(input))`` as one module, for captum's DeepLift hooks."""

    def __init__(self, adapter: ModelAdapter, target: Target) -> None:
        super().__init__()
        self.net = adapter.module
        self._forward = adapter.forward
        self._target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._target(self._forward(x))


# --- baselines ----------------------------------------------------------------------------


def _window_rng(seed: int, codes: np.ndarray) -> np.random.Generator:
    """Generator seeded by the seed and the window's own sequence: independent of batching."""
    digest = hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def _baselines(
    adapter: ModelAdapter,
    layout: InputLayout,
    inputs: torch.Tensor,
    codes: np.ndarray,
    tracks: np.ndarray | None,
    kind: str,
    track_baseline: str,
    n_shuffles: int,
    seed: int,
) -> Iterator[torch.Tensor]:
    """Yield the baseline inputs one at a time: one for zeros/uniform, ``n_shuffles`` for shuffle."""
    dna = [*layout.sequence, *([layout.n] if layout.n is not None else [])]
    rngs = [_window_rng(seed, row) for row in codes] if kind == "shuffle" else []
    for _ in range(n_shuffles if kind == "shuffle" else 1):
        base = inputs.detach().clone()
        view = _channels_last(base, layout)
        if kind == "shuffle":
            shuffled = np.stack([dinucleotide_shuffle(row, rng) for row, rng in zip(codes, rngs)])
            view[..., dna] = _channels_last(adapter.build_input(shuffled, tracks), layout)[..., dna].to(base)
        else:
            view[..., dna] = 0.0
            if kind == "uniform":
                view[..., list(layout.sequence)] = 0.25
        if track_baseline == "zeros" and layout.tracks:
            view[..., list(layout.tracks)] = 0.0
        yield base


# --- gradient methods ---------------------------------------------------------------------


def _chunks(x: torch.Tensor, size: int | None) -> list[torch.Tensor]:
    return list(x.split(size)) if size else [x]


def _evaluate(fn: Target, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Target values without gradients, ``chunk`` windows per forward."""
    with torch.no_grad():
        return torch.cat([fn(part) for part in _chunks(x, chunk)]).double()


def _gradient(fn: Target, x: torch.Tensor, chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input gradient and target value of every window (windows are independent in eval mode)."""
    grads, values = [], []
    for part in _chunks(x, chunk):
        part = part.detach().requires_grad_(True)
        with torch.enable_grad():
            value = fn(part)
            (grad,) = torch.autograd.grad(value.sum(), part)
        grads.append(grad)
        values.append(value.detach())
    return torch.cat(grads), torch.cat(values).double()


def _integrated_gradients(
    fn: Target,
    x: torch.Tensor,
    baselines: Iterator[torch.Tensor],
    n_steps: int,
    integration: str,
    chunk: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean IG over the baselines, and the mean target value of the baselines."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(fn)
    total, base_values, count = torch.zeros_like(x, dtype=torch.float64), torch.zeros(len(x), dtype=torch.float64), 0
    for base in baselines:
        parts = [
            ig.attribute(xp, baselines=bp, n_steps=n_steps, method=integration, internal_batch_size=chunk)
            for xp, bp in zip(_chunks(x, chunk), _chunks(base, chunk))
        ]
        total += torch.cat(parts).detach().double()
        base_values += _evaluate(fn, base, chunk).cpu()
        count += 1
    return total / count, base_values / count


def _deeplift(
    adapter: ModelAdapter,
    target: Target,
    x: torch.Tensor,
    baselines: Iterator[torch.Tensor],
    chunk: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DeepLIFT (rescale rule) over the baselines (DeepLIFT-SHAP for several)."""
    from captum.attr import DeepLift

    net = _TargetNet(adapter, target)
    explainer = DeepLift(net)
    pairs = max(1, chunk // 2) if chunk else None  # captum runs input and baseline in one batch
    total, base_values, count = torch.zeros_like(x, dtype=torch.float64), torch.zeros(len(x), dtype=torch.float64), 0
    for base in baselines:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*hooks", category=UserWarning)
            parts = [
                explainer.attribute(xp.detach().requires_grad_(True), baselines=bp)
                for xp, bp in zip(_chunks(x, pairs), _chunks(base, pairs))
            ]
        total += torch.cat(parts).detach().double()
        base_values += _evaluate(net, base, chunk).cpu()
        count += 1
    return total / count, base_values / count


# --- public entry point -------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """Options of one :func:`attribute` call (see its docstring)."""

    method: str
    baseline: str
    track_baseline: str
    n_shuffles: int
    seed: int
    n_steps: int
    integration: str
    chunk: int | None
    checkpoint: bool | tuple[str, ...]

    def check(self) -> None:
        if self.method not in METHODS:
            raise AttributionError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        if self.baseline not in BASELINES:
            raise AttributionError(f"unknown baseline {self.baseline!r}; choose from {list(BASELINES)}")
        if self.track_baseline not in TRACK_BASELINES:
            raise AttributionError(
                f"unknown track_baseline {self.track_baseline!r}; choose from {list(TRACK_BASELINES)}"
            )
        if self.n_steps < 2 or self.n_shuffles < 1 or (self.chunk is not None and self.chunk < 1):
            raise AttributionError(
                "need n_steps >= 2, n_shuffles >= 1, internal_batch_size >= 1; "
                f"got {self.n_steps}, {self.n_shuffles}, {self.chunk}"
            )
        if self.integration not in INTEGRATIONS:
            raise AttributionError(
                f"unknown integration {self.integration!r}; choose from {list(INTEGRATIONS)} (captum's "
                "riemann_trapezoid is left out: its weights sum to 1 - 1/n_steps, a bias of order 1/n_steps)"
            )
        if self.method == "deeplift_shap" and self.baseline != "shuffle":
            raise AttributionError(
                "deeplift_shap averages over a distribution of references: use baseline='shuffle'"
            )
        if self.deeplift and self.checkpoint:
            raise AttributionError(
                "checkpoint cannot be combined with DeepLIFT (its hooks would see recomputed blocks)"
            )

    @property
    def deeplift(self) -> bool:
        return self.method in ("deeplift", "deeplift_shap")

    @property
    def blocks(self) -> list[str] | None:
        return None if self.checkpoint is True else list(self.checkpoint or ())

    def params(self, target: Target) -> dict[str, Any]:
        """Provenance: the settings that shaped the result."""
        out: dict[str, Any] = {"target": repr(target), "internal_batch_size": self.chunk}
        if self.method in _BASELINE_METHODS:
            out.update(baseline=self.baseline, track_baseline=self.track_baseline, seed=self.seed)
            out.update(n_shuffles=self.n_shuffles if self.baseline == "shuffle" else None)
        if self.method == "integrated_gradients":
            out.update(n_steps=self.n_steps, integration=self.integration)
        if self.checkpoint:
            out["checkpoint"] = self.blocks if self.blocks is not None else "default"
        return out


def _split(attr: torch.Tensor, layout: InputLayout) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Input-shaped attributions → sequence ``[B, L, 4]``, N ``[B, L]``, tracks ``[B, T, L]``."""
    last = _channels_last(attr, layout).float().cpu()
    sequence = last[..., list(layout.sequence)].numpy()
    n = last[..., layout.n].numpy() if layout.n is not None else None
    tracks = last[..., list(layout.tracks)].transpose(1, 2).contiguous().numpy() if layout.tracks else None
    return sequence, n, tracks


def _run(
    s: _Settings,
    adapter: ModelAdapter,
    target: Target,
    inputs: torch.Tensor,
    baselines: Callable[[], Iterator[torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Attributions (input-shaped), target values and mean baseline values (``None`` without baselines)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return target(adapter.forward(x))

    with checkpointing(adapter.module, s.blocks) if s.checkpoint else _nothing():
        if s.method in ("saliency", "input_x_gradient"):
            attr, values = _gradient(fn, inputs, s.chunk)
            return (attr * inputs if s.method == "input_x_gradient" else attr), values, None
        if s.method == "integrated_gradients":
            attr, base_values = _integrated_gradients(fn, inputs, baselines(), s.n_steps, s.integration, s.chunk)
        else:
            attr, base_values = _deeplift(adapter, target, inputs, baselines(), s.chunk)
    return attr, _evaluate(fn, inputs, s.chunk), base_values


def attribute(
    adapter: ModelAdapter,
    codes: np.ndarray,
    tracks: np.ndarray | None,
    target: Target,
    method: str = "saliency",
    *,
    baseline: str = "zeros",
    track_baseline: str = "unchanged",
    n_shuffles: int = 10,
    seed: int = 0,
    n_steps: int = 50,
    integration: str = "gausslegendre",
    internal_batch_size: int | None = None,
    checkpoint: bool | Sequence[str] = False,
) -> Attribution:
    """Attribute a map target to the input bases and tracks of each window.

    Parameters
    ----------
    adapter
        The model; it runs in eval mode with parameter gradients off during the call
        (both restored after). Its input layout comes from :func:`input_layout`.
    codes
        ``uint8 [B, L]`` base codes (A0 C1 G2 T3 N4) of the windows.
    tracks
        ``float32 [B, T, L]`` transformed tracks, or ``None`` for sequence-only models.
    target
        ``[B, n, n]`` maps → ``[B]`` (:func:`screening.maps.targets.make_target`).
    method
        ``"saliency"`` (raw input gradient, signed), ``"input_x_gradient"``,
        ``"integrated_gradients"``, ``"deeplift"`` or ``"deeplift_shap"``.
    baseline
        Reference for IG / DeepLIFT, applied to the sequence channels: ``"zeros"`` (all
        DNA channels 0), ``"uniform"`` (0.25 on A, C, G, T; N channel 0) or
        ``"shuffle"`` (``n_shuffles`` dinucleotide shuffles of each window, N kept in
        place; attributions and baseline values are averaged over them).
    track_baseline
        Track channels of the baseline: ``"unchanged"`` (the window's own tracks: the
        attribution is to sequence given the tracks) or ``"zeros"``.
    n_shuffles
        Shuffles per window for ``baseline="shuffle"`` (``deeplift`` uses one).
    seed
        Shuffle seed; each window's shuffles depend on the seed and its own sequence only.
    n_steps
        IG integration points.
    integration
        captum's IG rule: ``"gausslegendre"``, ``"riemann_left"``, ``"riemann_right"``
        or ``"riemann_middle"`` (captum's ``"riemann_trapezoid"`` is refused: its weights
        sum to ``1 − 1/n_steps``).
    internal_batch_size
        Most input rows per model forward (IG's interpolation steps included); DeepLIFT
        runs input and baseline together, so it uses ``internal_batch_size // 2``
        windows (at least 1) per forward. ``None``: each method's whole batch at once.
    checkpoint
        Activation checkpointing of the model's blocks during gradient passes: ``True``
        for :func:`checkpoint_blocks`, or a list of submodule names.

    Returns
    -------
    Attribution

    Raises
    ------
    AttributionError
        Unknown method or options, an adapter without a layout, or DeepLIFT on a model
        its rules do not cover (e.g. C.Origami's attention).
    """
    s = _Settings(
        method,
        baseline,
        track_baseline,
        1 if method == "deeplift" else n_shuffles,
        seed,
        n_steps,
        integration,
        internal_batch_size,
        checkpoint if isinstance(checkpoint, bool) else tuple(checkpoint),
    )
    s.check()
    layout = input_layout(adapter)
    codes = np.asarray(codes)
    inputs = adapter.build_input(codes, tracks)
    _check_layout(layout, inputs)

    def baselines() -> Iterator[torch.Tensor]:
        return _baselines(adapter, layout, inputs, codes, tracks, s.baseline, s.track_baseline, s.n_shuffles, s.seed)

    with _inputs_only(adapter.module):
        if s.deeplift:
            check_deeplift(adapter, inputs, target)
        attr, values, base_values = _run(s, adapter, target, inputs, baselines)
    completeness = None
    if base_values is not None:
        completeness = (attr.double().flatten(1).sum(1).cpu() - (values.cpu() - base_values)).numpy()
    sequence, n_channel, track_attr = _split(attr, layout)
    if method in _BASELINE_METHODS and track_baseline == "unchanged":
        track_attr = None  # exactly 0: the path never moves the tracks
    return Attribution(
        sequence=sequence,
        sequence_corrected=gradient_correction(sequence),
        tracks=track_attr,
        target=values.cpu().numpy(),
        completeness_error=completeness,
        method=method,
        params=s.params(target),
        sequence_n=n_channel,
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# --- tiling and stitching -----------------------------------------------------------------


def tile_windows(region_start: int, region_end: int, window_length: int, step: int, chrom_length: int) -> list[int]:
    """Starts of overlapping windows that cover ``[region_start, region_end)``.

    Window ``k`` is centred on ``region_start + k·step + step/2`` (rounded down), so that
    the part of the region a window owns in :func:`stitch` (``step`` bases around its
    centre) is as central as possible; starts are clipped to ``[0, chrom_length −
    window_length]`` and duplicates dropped. Every window lies inside the chromosome.

    Parameters
    ----------
    region_start, region_end
        0-based, half-open region on one chromosome.
    window_length
        Model input length.
    step
        Distance between consecutive window starts, ``1 <= step <= window_length``.
    chrom_length
        Length of the chromosome.

    Returns
    -------
    list[int]
        Sorted window starts.
    """
    if not 0 <= region_start < region_end <= chrom_length:
        raise ValueError(
            f"region [{region_start:,}, {region_end:,}) is empty or outside a chromosome of {chrom_length:,}"
        )
    if not 1 <= step <= window_length <= chrom_length:
        raise ValueError(
            f"need 1 <= step ({step}) <= window_length ({window_length}) <= chrom_length ({chrom_length})"
        )
    count = -(-(region_end - region_start) // step)
    starts = region_start + np.arange(count) * step + step // 2 - window_length // 2
    return np.unique(np.clip(starts, 0, chrom_length - window_length)).tolist()


def _owned_spans(starts: list[int], lengths: list[int]) -> list[tuple[float, float]]:
    """Each window owns the positions closer to its centre than to its neighbours' (ties go left)."""
    doubled = [2 * s + n for s, n in zip(starts, lengths)]  # twice the centres: integers
    cuts = [(a + b - 2) // 4 + 1 for a, b in zip(doubled, doubled[1:])]  # first position of the next window
    return list(zip([-np.inf, *cuts], [*cuts, np.inf]))


def stitch(
    windows: Sequence[tuple[int, np.ndarray]], region_start: int, region_end: int, keep: str = "centre"
) -> np.ndarray:
    """Assemble per-window per-base arrays into one array over a region.

    Parameters
    ----------
    windows
        ``(window_start, values)`` pairs; ``values`` is ``[L, C]`` (or ``[L]``) per base
        of the window ``[window_start, window_start + L)``, e.g. ``Attribution.sequence[i]``.
    region_start, region_end
        0-based, half-open region to assemble.
    keep
        ``"centre"``: each position comes from the one window whose centre is nearest
        (boundaries are the midpoints between consecutive centres; the first and last
        windows also own the region's edges, their outer parts), so there are no seams
        and no blending. ``"mean"``: the mean over every window covering the position.

    Returns
    -------
    numpy.ndarray
        ``[region_end − region_start, C]`` (``[…]`` for 1-D values).

    Raises
    ------
    ValueError
        When the windows leave part of the region uncovered (or a window's owned part
        falls outside it), or their values disagree in trailing shape.
    """
    if keep not in ("centre", "mean"):
        raise ValueError(f"keep must be 'centre' or 'mean', got {keep!r}")
    if region_end <= region_start:
        raise ValueError(f"empty region [{region_start:,}, {region_end:,})")
    items = sorted(((int(s), np.asarray(v)) for s, v in windows), key=lambda w: 2 * w[0] + len(w[1]))
    if not items:
        raise ValueError("no windows to stitch")
    tail = items[0][1].shape[1:]
    if any(v.shape[1:] != tail for _, v in items):
        raise ValueError(f"windows disagree in trailing shape: {sorted({v.shape[1:] for _, v in items})}")
    centres = [2 * s + len(v) for s, v in items]  # doubled, so integers
    unique = [w for i, w in enumerate(items) if i == 0 or centres[i] != centres[i - 1]]  # same centre: keep first
    dtype = np.result_type(*(v.dtype for _, v in unique))
    out = np.zeros((region_end - region_start, *tail), dtype=np.float64 if keep == "mean" else dtype)
    count = np.zeros(region_end - region_start, dtype=np.int64)
    spans = _owned_spans([s for s, _ in unique], [len(v) for _, v in unique])
    for (start, values), (own_lo, own_hi) in zip(unique, spans):
        lo, hi = max(region_start, start), min(region_end, start + len(values))
        if keep == "centre":
            lo, hi = int(max(region_start, own_lo)), int(min(region_end, own_hi))
            if lo < hi and (lo < start or hi > start + len(values)):
                raise ValueError(
                    f"windows leave part of [{lo:,}, {hi:,}) uncovered: the nearest window there "
                    f"(at {start:,}, length {len(values)}) does not reach it"
                )
        if lo >= hi:
            continue
        out[lo - region_start : hi - region_start] += values[lo - start : hi - start]
        count[lo - region_start : hi - region_start] += 1
    if (count == 0).any():
        gap = region_start + int(np.flatnonzero(count == 0)[0])
        raise ValueError(f"windows leave position {gap:,} of [{region_start:,}, {region_end:,}) uncovered")
    if keep == "mean":
        out = (out / count.reshape(-1, *([1] * len(tail)))).astype(dtype, copy=False)
    return out


def check_attributions(spec: ScreenSpec, adapter) -> None:
    """Refuse attribution analyses the loaded model cannot run (no input layout; DeepLIFT on a model
    with modules DeepLIFT has no rule for), naming the field, before any store exists.

    Raises
    ------
    ModelError
        ``perturbations.<i>.method: ...`` with the reason.
    """
    for i, perturbation in enumerate(spec.perturbations):
        if not kind_of(perturbation).gradients:
            continue
        try:
            check_model(adapter, perturbation.method)
        except AttributionError as err:
            raise ModelError(f"perturbations.{i}.method: {err}") from None

"""The torch backend of the fused engine: the per-pixel quantities of :mod:`.spec` in chunks.

Same interface as the Triton launchers in ``kernels/fused_loss.py``::

    fused_loss_forward(z, t, *, quantities, params, valid, weight, distance, deterministic) -> S [B*C, K]
    fused_loss_backward(z, t, coeffs, *, quantities, params, valid, weight, distance) -> dL/dz like z

``z`` is ``[B, C, N]`` (any strides, any float dtype), ``t`` bool/uint8/float of the same shape,
``valid`` an optional bool mask, ``weight`` and ``distance`` optional float maps. The pixels are
visited in cache-sized chunks (:data:`CHUNK` elements: part of one row, or several whole rows when
the rows are short), so the extra memory of a call is a few chunk-sized buffers plus its output;
nothing per pixel is kept between forward and backward. Within a chunk every quantity shares one
set of primitives, each computed once and only when a requested quantity needs it:

    p = sigmoid(z), q = sigmoid(-z) = 1 - p,  l1 = log1p(exp(-|z|)) = log1p(min(p, q) / max(p, q)),
    spn = -log p = l1 - min(z, 0),  spp = -log(1-p) = l1 + max(z, 0),
    margin m:  qm = 1 - sigmoid(z - m) = sigmoid(m - z),  spnm = -log sigmoid(z - m) = softplus(m - z)

Compute dtype: float64 for float64 logits, float32 otherwise. Chunk sums are added in
float64 in a fixed order, so the result is deterministic whatever ``deterministic`` says.

Threads (CPU): the ops run on torch's intra-op threads like every other op of the caller
(``torch.set_num_threads``), and a chunk holds at least :data:`GRAIN` elements per thread, so each
op spreads over all of them. On 2 idle cores this is 1.6-1.8x faster than one thread
(8x1x1024x1024, 2026-12-06: focal 189 -> 115 ms, hybrid focal margin 201 -> 117 ms forward +
backward); with the other core busy it is 1.0-1.5x slower, as any torch op then is: set
``torch.set_num_threads`` for the cores a process really has (``torchrun`` sets 1 per process).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .spec import Quantity as Q
from .spec import TermParams

#: Elements per chunk at one or two threads: large enough to amortise the per-op overhead,
#: small enough for L2 (64K elements = 256 KiB per fp32 buffer; the fastest of 16K-128K measured
#: at 8x1x1024x1024, serial, and of 64K-512K with 2 threads).
CHUNK = 1 << 16

#: Elements per thread at least: torch splits an elementwise op into pieces of at least this many
#: (``at::internal::GRAIN_SIZE``), so a chunk of ``GRAIN * threads`` keeps every thread busy.
GRAIN = 1 << 15

#: Elements per chunk at most (4 MiB a float32 buffer): bounds a call's transient memory on a
#: many-core machine (32 threads and more then share ops of this size).
MAX_CHUNK = 1 << 20

_CONSTANT = {Q.SUM_T, Q.SUM_TT, Q.COUNT}


def live_columns(qs) -> tuple[int, ...]:
    """The positions of the quantities of ``qs`` that depend on the logits (the others have no
    derivative: sums of targets and the valid count)."""
    return tuple(i for i, k in enumerate(qs) if k not in _CONSTANT)


def compute_dtype(z: Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# chunking
# --------------------------------------------------------------------------------------------


def _rows(x: Tensor | None, G: int, N: int) -> Tensor | None:
    """``[B, C, N]`` as ``[G, N]`` (a view when the strides allow it, else a copy)."""
    if x is None:
        return None
    try:
        return x.view(G, N)
    except RuntimeError:
        return x.reshape(G, N)


def _blocks(G: int, N: int, chunk: int):
    """Yield ``(g0, g1, s, e)``: rows ``g0:g1``, columns ``s:e``; either part of one row, or whole
    rows (short rows: ``G N / chunk`` blocks rounded to the nearest count, of equal row counts, so
    8 rows of 96x96 make one block of 1.1 chunks rather than blocks of 7 rows and 1 row, each
    paying every op's overhead)."""
    if 2 * N > chunk:
        n_chunks = -(-N // chunk)
        size = -(-N // n_chunks)
        for g in range(G):
            for s in range(0, N, size):
                yield g, g + 1, s, min(s + size, N)
    else:
        rows = -(-G // max(1, round(G * N / chunk)))
        for g0 in range(0, G, rows):
            yield g0, min(g0 + rows, G), 0, N


def _chunk_elements(device: torch.device) -> int:
    """Elements per chunk: :data:`CHUNK`, or :data:`GRAIN` per intra-op thread where that is more,
    up to :data:`MAX_CHUNK`."""
    return min(max(CHUNK, GRAIN * torch.get_num_threads()), MAX_CHUNK) if device.type == "cpu" else CHUNK


def _pow(x: Tensor, g: float, value: float | Tensor | None = None) -> Tensor | None:
    """``x ** g`` for ``x >= 0``; ``None`` stands for 1 (g = 0); ``0 ** g = 0`` for g > 0.

    ``g`` picks the form (0, 1, 2 and 0.5 are special-cased); ``value`` (default ``g``) is the
    exponent actually used by the general form: a 0-d tensor under :mod:`.inductor_path`.
    """
    if g == 0:
        return None
    if g == 1:
        return x
    if g == 2:
        return x * x
    if g == 0.5:
        return torch.sqrt(x)
    return torch.pow(x, g if value is None else value)


def _addcmul(a: Tensor, b: Tensor, c: Tensor, value: float | Tensor) -> Tensor:
    """``a + value * b * c`` (``torch.addcmul`` takes only a Python number as ``value``)."""
    if isinstance(value, Tensor):
        return a + b * c * value
    return torch.addcmul(a, b, c, value=value)


#: The values of each TermParams field at which the formulas below take a special form (the
#: branches compare a field, or the field minus 1, with these); elsewhere only its value matters.
SPECIAL_VALUES = {
    "g_fg": (0.0, 0.5, 1.0, 2.0),
    "m": (0.0,),
    "g_bg": (0.0, 0.5, 1.0, 2.0),
    "gce": (1.0, 2.0),
    "dibe_g": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    "dibe_alpha": (),
    "dibe_beta": (),
}


def param_forms(params: TermParams) -> tuple:
    """What decides the branches of the formulas for ``params``: two parameter sets with equal
    forms evaluate the same expressions, with different numbers."""
    return tuple(
        value if value in SPECIAL_VALUES[name] else None
        for name, value in ((f, getattr(params, f)) for f in TermParams.__dataclass_fields__)
    )


def _mul(a: Tensor, b: Tensor | None) -> Tensor:
    return a if b is None else a * b


class cached_property:  # noqa: N801
    """``functools.cached_property`` without its lock (the lock is a graph break for torch.compile,
    which :mod:`.inductor_path` runs these formulas under; a chunk is never shared between threads)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


# --------------------------------------------------------------------------------------------
# per-chunk primitives
# --------------------------------------------------------------------------------------------


def _as_float(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x.to(dtype)``; a bool tensor through its uint8 view in eager code, the same 0/1 values
    five times faster (torch's CPU kernels that read bool are unvectorised)."""
    if x.dtype == torch.bool and not torch.compiler.is_compiling():
        x = x.view(torch.uint8)
    return x.to(dtype)


#: The integer type of each floating type's bits, for :func:`_select`.
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _select(condition: Tensor, a: Tensor, b: Tensor | None = None) -> Tensor:
    """``torch.where(condition, a, b)`` (``b`` None: 0) for a bool ``condition`` and ``a``, ``b`` of
    its shape and one floating dtype. In eager code on CPU it is the blend
    ``b ^ ((a ^ b) & -condition)`` of their bits: the same values, NaN and inf included, in 50 us
    per 64K float32 elements whatever the condition; torch's CPU ``where`` branches per element,
    50 us where the condition is nearly constant (a trained crack prediction) and 300 us where it
    is not (DIBE's ``p >= 1/2`` early in training: its forward + backward at 4x1x1024x1024 took
    1.4x as long)."""
    bits = _BITS.get(a.dtype)
    if bits is None or a.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.where(condition, a, 0.0 if b is None else b)
    mask = condition.view(torch.uint8).to(bits).neg_()
    if b is None:
        return a.view(bits).bitwise_and(mask).view(a.dtype)
    b_bits = b.view(bits)
    return a.view(bits).bitwise_xor(b_bits).bitwise_and_(mask).bitwise_xor_(b_bits).view(a.dtype)


class _Chunk:
    """The inputs of one chunk ``[R, L]`` and the primitives derived from them, each made once."""

    def __init__(self, z, t, valid, weight, distance, params: TermParams, dtype, values=None):
        self.dtype = dtype
        self.params = params  # decides the branches (only through param_forms)
        self.val = params if values is None else values  # the numbers (0-d tensors under inductor_path)
        # An ignored pixel's logit reads as 0: its terms are multiplied by 0, and an inf or NaN
        # there (an fp16 overflow in padding) would make that product NaN.
        self.z = z.to(dtype) if valid is None else _select(valid, z.to(dtype))
        self.v = None if valid is None else _as_float(valid, dtype)
        self.hard = not t.is_floating_point()  # bool / uint8 labels: t is exactly 0 or 1
        if valid is None:
            self.t = _as_float(t, dtype)
        elif self.hard:  # ignored pixels: t = 0 (whatever they hold: 255, say)
            self.t = _as_float(t, dtype).mul_(self.v)
        else:  # a product would keep the NaN an ignored soft label may hold
            self.t = _select(valid, t.to(dtype))
        self.w = None if weight is None else weight.to(dtype)
        self.d = None if distance is None else distance.to(dtype)

    # targets -----------------------------------------------------------------------------
    @cached_property
    def nt(self) -> Tensor:  # (1 - t) * valid
        return torch.rsub(self.t, 1.0) if self.v is None else self.v - self.t

    @cached_property
    def tw(self) -> Tensor:  # t * w
        return _mul(self.t, self.w)

    @cached_property
    def ntw(self) -> Tensor:  # (1 - t) * valid * w
        return _mul(self.nt, self.w)

    # logits ------------------------------------------------------------------------------
    @cached_property
    def p(self) -> Tensor:
        return torch.sigmoid(self.z)

    @cached_property
    def q(self) -> Tensor:  # 1 - p, accurate where p is close to 1
        return torch.sigmoid(torch.neg(self.z))

    @cached_property
    def l1(self) -> Tensor:  # log1p(exp(-|z|)), exp(-|z|) = min(p, q) / max(p, q)
        # (one log1p shared by spn and spp: torch's CPU log1p and softplus are 2x and 3x the time of a sigmoid)
        return torch.minimum(self.p, self.q).div_(torch.maximum(self.p, self.q)).log1p_()

    @cached_property
    def spn(self) -> Tensor:  # -log p = softplus(-z) = l1 - min(z, 0)
        return self.l1 - torch.clamp(self.z, max=0.0)

    @cached_property
    def spp(self) -> Tensor:  # -log(1 - p) = softplus(z) = l1 + max(z, 0)
        return torch.clamp(self.z, min=0.0).add_(self.l1)

    @cached_property
    def m_minus_z(self) -> Tensor:
        return self.val.m - self.z

    @cached_property
    def qm(self) -> Tensor:  # 1 - sigmoid(z - m) = sigmoid(m - z), accurate where it is small
        if self.params.m == 0:
            return self.q
        return torch.sigmoid(self.m_minus_z)

    @cached_property
    def spnm(self) -> Tensor:  # -log sigmoid(z - m) = softplus(m - z) (log1p(exp(.)) below 20)
        if self.params.m == 0:
            return self.spn
        return torch.nn.functional.softplus(self.m_minus_z)

    @cached_property
    def focal_fg(self) -> Tensor | None:  # (1-p)^g_fg
        return _pow(self.q, self.params.g_fg, self.val.g_fg)

    @cached_property
    def focal_bg(self) -> Tensor | None:  # p^g_bg
        return _pow(self.p, self.params.g_bg, self.val.g_bg)

    @cached_property
    def yhat(self) -> Tensor:
        return self.z >= 0

    @cached_property
    def p_minus_t(self) -> Tensor:  # as (1 - t) - q where t > 1/2: p - 1 would cancel on crack pixels
        if self.hard:  # one product is 0 and the other exact: no select needed
            return torch.mul(self.p, self.nt).sub_(torch.mul(self.q, self.t))
        return _select(self.t > 0.5, torch.rsub(self.t, 1.0).sub_(self.q), self.p - self.t)

    @cached_property
    def squared_error(self) -> Tensor:  # (p - t)^2
        return self.p_minus_t.square()

    # per-pixel quantities (before the valid / weight factors) -----------------------------
    def fg_ce(self) -> Tensor:  # (1-p)^g (-log sigmoid(z-m))
        return _mul(self.spnm, self.focal_fg)

    def bg_ce(self) -> Tensor:  # p^g (-log(1-p))
        return _mul(self.spp, self.focal_bg)

    def _el_log(self, fg: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(safe, log_nl, normal)`` of ``nl = -log p`` (``fg``) or ``-log(1-p)``, made once per
        chunk: ``nl`` clamped to the smallest normal number, ``log nl`` (``-|z|`` where ``nl`` has
        underflowed: |z| > 87 in float32), and the mask of normal ``nl``. In eager CPU code a quick
        look first (``nl`` rarely underflows, and the select costs as much as the power): ``normal``
        is None where nothing did; a compiled graph fuses the select, and a CUDA tensor would have
        to synchronise for the look, so both always take it."""
        key = "_el_log_fg" if fg else "_el_log_bg"
        if key not in self.__dict__:
            nl = self.spn if fg else self.spp
            tiny = torch.finfo(self.dtype).tiny
            safe = nl.clamp_min(tiny)
            log_nl, normal = safe.log(), None
            if nl.device.type != "cpu" or torch.compiler.is_compiling() or bool((nl < tiny).any()):
                normal = nl >= tiny
                log_nl = _select(normal, log_nl, self.z.abs().neg_())
            self.__dict__[key] = (safe, log_nl, normal)
        return self.__dict__[key]

    def el(self, fg: bool) -> Tensor:
        """``nl^gce``: ``nl = -log p`` (``fg``) or ``-log(1-p)``.

        Any exponent but 1 and 2 goes through ``log nl`` (:meth:`_el_log`), so a confident pixel
        whose ``nl`` has underflowed keeps its ``e^(-gce |z|)``; clamping ``nl`` there gave
        ``tiny^gce`` (1.6e-4 for gce = 0.1, against 2.3e-6 at |z| = 130) and a zero gradient.
        """
        nl = self.spn if fg else self.spp
        gce = self.params.gce
        if gce == 1:
            return nl
        if gce == 2:
            return nl * nl
        return torch.exp(self._el_log(fg)[1] * self.val.gce)

    def el_slope(self, fg: bool) -> Tensor:
        """``gce nl^(gce-1) r`` (``r = 1 - p`` for ``fg``, else ``p``): ``-d(nl^gce)/dz`` for ``fg``,
        ``+`` otherwise; written ``gce nl^gce (r / nl)``, whose ``r / nl`` is 1 where ``nl`` has
        underflowed (``nl^(gce-1)`` would overflow there)."""
        nl, r = (self.spn, self.q) if fg else (self.spp, self.p)
        gce = self.params.gce
        if gce == 1:
            return r
        if gce == 2:
            return (nl * r).mul_(2.0)
        safe, _, normal = self._el_log(fg)
        ratio = r / safe
        if normal is not None:
            ratio = _select(normal, ratio, torch.ones_like(r))
        return ratio.mul_(self.el(fg)).mul_(self.val.gce)

    def _dibe_parts(self, fg: bool):
        """(hit value, miss/alarm value, u) of DIBE_FG (``fg``) or DIBE_BG."""
        g, g_val = self.params.dibe_g, self.val.dibe_g
        a1 = 1.0 + (self.val.dibe_alpha if fg else self.val.dibe_beta)
        nl = self.spn if fg else self.spp  # -log p  or  -log(1-p)
        focus = self.q if fg else self.p  # hit focusing base
        u = torch.expm1(nl * -a1).neg_().clamp_min_(torch.finfo(self.dtype).tiny)  # 1 - p^(1+a)
        hit = _mul(nl, _pow(focus, g, g_val))
        miss = _mul(nl * a1, _pow(u, g, g_val))
        return hit, miss, u, nl, a1

    def dibe(self, fg: bool) -> Tensor:
        hit, miss, *_ = self._dibe_parts(fg)
        return _select(self.yhat, hit, miss) if fg else _select(self.yhat, miss, hit)


# --------------------------------------------------------------------------------------------
# forward: per-row sums
# --------------------------------------------------------------------------------------------


def _rowsum(x: Tensor) -> Tensor:
    return x.sum(dim=-1)


def _rowdot(x: Tensor, y: Tensor) -> Tensor:
    # one row: a BLAS dot, no temporary (eager only: under torch.compile mul + sum fuses into the loop)
    if x.ndim == 2 and x.shape[0] == 1 and x.is_contiguous() and y.is_contiguous() and not torch.compiler.is_compiling():
        return torch.dot(x[0], y[0]).reshape(1)
    return torch.mul(x, y).sum(dim=-1)


def _chunk_sums(c: _Chunk, quantities) -> list[Tensor]:
    """The sums over the last axis of the chunk's pixels (``[R, L]``, or ``[G, blocks, L]`` under
    :mod:`.inductor_path`), one tensor of the leading shape per quantity."""
    out = []
    for k in quantities:
        if k == Q.TP:
            s = _rowdot(c.p, c.t)
        elif k == Q.SUM_P:
            s = _rowsum(c.p) if c.v is None else _rowdot(c.p, c.v)
        elif k == Q.SUM_T:
            s = _rowsum(c.t)
        elif k == Q.SUM_PP:
            s = _rowdot(c.p, c.p) if c.v is None else _rowdot(c.p * c.p, c.v)
        elif k == Q.SUM_TT:
            s = _rowdot(c.t, c.t)
        elif k == Q.COUNT:
            s = c.z.new_full(c.z.shape[:-1], float(c.z.shape[-1])) if c.v is None else _rowsum(c.v)
        elif k == Q.FG_CE:
            s = _rowdot(c.fg_ce(), c.tw)
        elif k == Q.BG_CE:
            s = _rowdot(c.bg_ce(), c.ntw)
        elif k == Q.EL_FG:
            s = _rowdot(c.el(True), c.tw)
        elif k == Q.EL_BG:
            s = _rowdot(c.el(False), c.ntw)
        elif k == Q.DIBE_FG:
            s = _rowdot(c.dibe(True), c.tw)
        elif k == Q.DIBE_BG:
            s = _rowdot(c.dibe(False), c.ntw)
        elif k == Q.SS_FG:
            s = _rowdot(c.squared_error, c.t)
        elif k == Q.SS_BG:
            s = _rowdot(c.squared_error, c.nt)
        elif k == Q.D_FP:
            s = _rowdot(c.p * c.d, c.nt)
        elif k == Q.D_SQERR:
            sq = c.squared_error * c.d
            s = _rowsum(sq) if c.v is None else _rowdot(sq, c.v)
        elif k == Q.FP:
            s = _rowdot(c.p, c.nt)
        elif k == Q.FN:
            s = _rowdot(c.q, c.t)
        elif k == Q.TN:
            s = _rowdot(c.q, c.nt)
        else:
            raise ValueError(f"unknown quantity {k!r}")
        out.append(s)
    return out


def _check_args(z, t, quantities, valid, weight, distance):
    if z.ndim != 3:
        raise ValueError(f"z must be [B, C, N]; got shape {tuple(z.shape)}")
    for name, x in (("t", t), ("valid", valid), ("weight", weight), ("distance", distance)):
        if x is not None and x.shape != z.shape:
            raise ValueError(f"{name} must have z's shape {tuple(z.shape)}; got {tuple(x.shape)}")
    qs = tuple(Q(int(k)) for k in quantities)
    if (Q.D_FP in qs or Q.D_SQERR in qs) and distance is None:
        raise ValueError("quantities D_FP / D_SQERR need a distance map")
    return qs


def fused_loss_forward(
    z: Tensor,
    t: Tensor,
    *,
    quantities,
    params: TermParams,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    distance: Tensor | None = None,
    deterministic: bool = True,
    chunk: int | None = None,
) -> Tensor:
    """Per (image, channel) sums ``S [B*C, K]`` of the requested quantities, in that order.

    float32 (float64 for float64 logits); every chunk's sums are added in float64, in a fixed
    order, so the result is bitwise reproducible at a given thread count, which sets the chunks
    (``deterministic`` is accepted for interface parity and changes nothing).
    """
    qs = _check_args(z, t, quantities, valid, weight, distance)
    B, C, N = z.shape
    G, K = B * C, len(qs)
    dtype = compute_dtype(z)
    acc = torch.zeros(G, K, dtype=torch.float64, device=z.device)
    if K == 0:
        return acc.to(dtype)
    z2, t2, v2, w2, d2 = (_rows(x, G, N) for x in (z, t, valid, weight, distance))
    blocks = _blocks(G, N, chunk or _chunk_elements(z.device))

    def one(block):
        g0, g1, s, e = block
        part = lambda x: None if x is None else x[g0:g1, s:e]  # noqa: E731
        c = _Chunk(part(z2), part(t2), part(v2), part(w2), part(d2), params, dtype)
        return torch.stack(_chunk_sums(c, qs), dim=-1)

    for block in blocks:
        acc[block[0] : block[1]] += one(block)  # fixed order: deterministic
    return acc.to(dtype)


# --------------------------------------------------------------------------------------------
# backward: sum_k c[g, k] ds_k/dz per pixel
# --------------------------------------------------------------------------------------------


def _chunk_grad(c: _Chunk, qs, coef: dict) -> Tensor:
    """``sum_k coef[k] * ds_k/dz`` of one chunk; ``coef[k]`` is ``[R, 1]``."""
    pr = c.params
    # region part: p q * A,  A = sum of the factors of p(1-p) in each ds_k/dz
    def add(acc, term):
        return term if acc is None else acc.add_(term)

    A = _confusion_factor(c, coef)
    if Q.SUM_PP in coef:
        A = add(A, _mul(c.p * (2 * coef[Q.SUM_PP]), c.v))
    if Q.SS_FG in coef or Q.SS_BG in coef:
        mix = None
        if Q.SS_FG in coef:
            mix = add(mix, c.t * coef[Q.SS_FG])
        if Q.SS_BG in coef:
            mix = add(mix, c.nt * coef[Q.SS_BG])
        A = add(A, mix.mul_(c.p_minus_t).mul_(2.0))
    if Q.D_FP in coef:
        A = add(A, c.d * c.nt * coef[Q.D_FP])
    if Q.D_SQERR in coef:
        A = add(A, _mul(c.d * c.p_minus_t * (2 * coef[Q.D_SQERR]), c.v))
    grad = None if A is None else A.mul_(c.p).mul_(c.q)

    # pointwise part
    if Q.FG_CE in coef:  # t w (1-p)^g (-(1 - pm) - g p (-lpm))
        d = torch.neg(c.qm)
        if pr.g_fg != 0:
            d = d.sub_(c.p * c.spnm * c.val.g_fg)
        d = _mul(d, c.focal_fg).mul_(c.tw).mul_(coef[Q.FG_CE])
        grad = add(grad, d)
    if Q.BG_CE in coef:  # (1-t) w p^g (p + g q (-lq))
        d = c.p if pr.g_bg == 0 else _addcmul(c.p, c.q, c.spp, c.val.g_bg)
        d = _mul(d, c.focal_bg)
        d = (d * c.ntw) if d is c.p else d.mul_(c.ntw)
        grad = add(grad, d.mul_(coef[Q.BG_CE]))
    if Q.EL_FG in coef:  # -t w gce (-lp)^(gce-1) (1 - p)
        grad = add(grad, (c.el_slope(True) * c.tw).mul_(-coef[Q.EL_FG]))  # (el_slope may be c.q itself)
    if Q.EL_BG in coef:  # (1-t) w gce (-lq)^(gce-1) p
        grad = add(grad, (c.el_slope(False) * c.ntw).mul_(coef[Q.EL_BG]))
    if Q.DIBE_FG in coef:
        grad = add(grad, _dibe_grad(c, True).mul_(c.tw).mul_(coef[Q.DIBE_FG]))
    if Q.DIBE_BG in coef:
        grad = add(grad, _dibe_grad(c, False).mul_(c.ntw).mul_(coef[Q.DIBE_BG]))
    if grad is None:
        grad = torch.zeros_like(c.z)
    return grad


def _confusion_factor(c: _Chunk, coef: dict) -> Tensor | None:
    """The factor of ``p(1-p)`` in the derivatives of TP, SUM_P, FP, FN and TN.

    On a valid pixel it is ``t a_t + (1-t) a_nt`` with ``a_t = c_TP + c_P - c_FN`` and
    ``a_nt = c_FP + c_P - c_TN``: ``torch.lerp(a_nt, a_t, t)``, one pass, which evaluates
    ``a_t - (a_t - a_nt)(1 - t)`` for ``t >= 0.5`` and so gives ``a_t`` exactly on a crack pixel (as
    ``a_nt + t (a_t - a_nt)`` it would lose the digits of ``a_t`` to a large ``a_nt``: seed 003's
    ``dL/dFP`` is large when FP is small). ``None`` when none of the five is summed.
    """
    def combine(plus, minus):
        terms = [coef[k] for k in plus if k in coef] + [-coef[k] for k in minus if k in coef]
        return sum(terms[1:], terms[0]) if terms else None

    a_t = combine((Q.TP, Q.SUM_P), (Q.FN,))
    a_nt = combine((Q.FP, Q.SUM_P), (Q.TN,))
    if a_nt is None:
        return None if a_t is None else c.t * a_t
    if a_t is None:
        return c.nt * a_nt
    if c.hard:  # t is 0 or 1: one product is 0 and the other exact (and 3x faster than lerp here)
        return torch.mul(c.t, a_t).add_(torch.mul(c.nt, a_nt))
    return _mul(torch.lerp(a_nt, a_t, c.t), c.v)


def _dibe_grad(c: _Chunk, fg: bool) -> Tensor:
    """d/dz of the active DIBE branch (see the module docstring of :mod:`.spec`).

    fg, hit (p >= .5):   (1-p)^g (-q - g p (-lp))
    fg, miss:            -(1+a) q [g (1+a) (1-u) u^(g-1) (-lp) + u^g],       u = 1 - p^(1+a)
    bg, hit (p < .5):    p^g (p + g q (-lq))
    bg, alarm:           (1+b) p [g (1+b) (1-u) u^(g-1) (-lq) + u^g],        u = 1 - (1-p)^(1+b)
    """
    g, g_val = c.params.dibe_g, c.val.dibe_g
    _, _, u, nl, a1 = c._dibe_parts(fg)
    if fg:
        hit = -c.q if g == 0 else (c.q + c.p * c.spn * g_val).neg_()
        hit = _mul(hit, _pow(c.q, g, g_val))
        outer = c.q * -a1
    else:
        hit = c.p if g == 0 else _addcmul(c.p, c.q, c.spp, g_val)
        hit = _mul(hit, _pow(c.p, g, g_val))
        outer = c.p * a1
    if g == 0:
        miss = outer
    else:
        inner = _mul(torch.rsub(u, 1.0).mul_(nl), _pow(u, g - 1, g_val - 1)).mul_(g_val * a1)
        miss = inner.add_(_pow(u, g, g_val)).mul_(outer)
    return _select(c.yhat, hit, miss) if fg else _select(c.yhat, miss, hit)


def fused_loss_backward(
    z: Tensor,
    t: Tensor,
    coeffs: Tensor,
    *,
    quantities,
    params: TermParams,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    distance: Tensor | None = None,
    chunk: int | None = None,
) -> Tensor:
    """``dL/dz = sum_k coeffs[g, k] * ds_k/dz`` per pixel, as a tensor like ``z`` (its dtype).

    ``coeffs`` is ``[B*C, K]`` (``dL/dS``, already scaled by the upstream gradient).
    """
    qs = _check_args(z, t, quantities, valid, weight, distance)
    B, C, N = z.shape
    G, K = B * C, len(qs)
    if coeffs.shape != (G, K):
        raise ValueError(f"coeffs must be [B*C, K] = {(G, K)}; got {tuple(coeffs.shape)}")
    dtype = compute_dtype(z)
    grad = torch.empty((B, C, N), dtype=z.dtype, device=z.device)
    live = live_columns(qs)
    if not live:
        return grad.zero_()
    coeffs = coeffs.to(dtype)
    z2, t2, v2, w2, d2 = (_rows(x, G, N) for x in (z, t, valid, weight, distance))
    g2 = grad.view(G, N)

    def one(block):
        g0, g1, s, e = block
        part = lambda x: None if x is None else x[g0:g1, s:e]  # noqa: E731
        c = _Chunk(part(z2), part(t2), part(v2), part(w2), part(d2), params, dtype)
        rows = coeffs[g0:g1]
        coef: dict = {}
        for i in live:
            col = rows[:, i : i + 1]
            coef[qs[i]] = col if qs[i] not in coef else coef[qs[i]] + col
        g2[g0:g1, s:e] = _chunk_grad(c, qs, coef)

    for block in _blocks(G, N, chunk or _chunk_elements(z.device)):
        one(block)
    return grad

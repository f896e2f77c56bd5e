"""The oracle: every loss of the catalog (``LOSSES.md``) as plain PyTorch autograd code.

Each function reads like the formula in its docstring and runs in float64 on CPU and CUDA. The
fused path (:mod:`fastseg.functional`) is tested against these functions and shares no code with
them beyond argument checking (:mod:`fastseg._checks`).

Modules: :mod:`.pointwise` (per-pixel terms), :mod:`.region` (terms over confusion sums),
:mod:`.compound` (weighted sums of the two), :mod:`.distance` (losses over distance maps).
"""

from .compound import *  # noqa: F401,F403
from .compound import __all__ as _compound
from .distance import *  # noqa: F401,F403
from .distance import __all__ as _distance
from .pointwise import *  # noqa: F401,F403
from .pointwise import __all__ as _pointwise
from .region import *  # noqa: F401,F403
from .region import __all__ as _region

__all__ = [*_pointwise, *_region, *_compound, *_distance]

"""`rlhf_interp.kl` is `rlhf_interp.core.kl` (the same module object): KL mechanics are a pure, model-free
core, so they live in `core/`; this short path stays because it is what users type."""

import sys

from rlhf_interp.core import kl as _kl

sys.modules[__name__] = _kl

"""Deprecated path: sampling lives in `rlhf_interp.bridge.generation` (this name is that same module, so
``rlhf_interp.generation.generate`` and monkeypatches of it keep working for one release)."""

import sys
import warnings

from rlhf_interp.bridge import generation as _generation

warnings.warn("rlhf_interp.generation moved to rlhf_interp.bridge.generation; the old path works for one more "
              "release.", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _generation

"""Old import path: the plotting helpers live in `rlhf_interp.report.plots`."""

from rlhf_interp.report.plots import *  # noqa: F401,F403
from rlhf_interp.report.plots import __all__  # noqa: F401

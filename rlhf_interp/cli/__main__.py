"""``python -m rlhf_interp.cli``: what launchers run in every process (``accelerate launch -m rlhf_interp.cli``)."""

import sys

from rlhf_interp.cli import main

sys.exit(main())

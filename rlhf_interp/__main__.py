import sys

from rlhf_interp.cli import main

sys.exit(main())

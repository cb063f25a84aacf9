"""Record the 2-process equality check of tests/test_distributed.py (its worker, launched the same way) into
benchmarks/results/distributed_equality.json, so docs/scaling.md can quote the measured errors.

    python benchmarks/distributed_equality.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_distributed as t
from _bench_common import write_result


def main() -> None:
    from rlhf_interp.ppo.distributed import launch_command

    with tempfile.TemporaryDirectory(prefix="dist-eq-") as tmp:
        models, out = Path(tmp) / "models", Path(tmp) / "result.json"
        t._save_tiny(models / "ref", logit_scale=10.0, noise=0.0)
        t._save_tiny(models / "policy", logit_scale=10.0, noise=0.5)
        cmd = launch_command(2, [])
        cmd = cmd[:cmd.index("-m", cmd.index("--main_process_port"))] + [
            str(ROOT / "tests" / "test_distributed.py"), "equality", str(out), str(models)]
        t._run(cmd)
        result = json.loads(out.read_text())
    write_result("distributed_equality", {k: v for k, v in result.items() if k != "rank"})


if __name__ == "__main__":
    main()

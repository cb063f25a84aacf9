#!/usr/bin/env bash
# Install the newest versions pyproject.toml allows into a scratch venv and run the suite, so the next
# upstream break is found here before a user finds it. Passing versions can then go into constraints.txt
# (this script prints the `pip freeze` to paste) and the upper bounds can be raised.
#
#   scripts/check_latest.sh                      # newest allowed versions
#   scripts/check_latest.sh "transformers==5.24.0"   # also force a version beyond the bounds (expect the canary)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CHECK_LATEST_VENV:-$(mktemp -d)/venv}"
python -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -e ".[dev]"
if [ "$#" -gt 0 ]; then
  # Overrides beyond the bounds: install without resolving our pins again.
  "$venv/bin/pip" install --quiet --no-deps "$@"
fi
echo "== versions under test"
"$venv/bin/pip" freeze | grep -v -e '^-e ' -e '^rlhf-interp' | tee "$venv/../freeze.txt" \
  | grep -i -E '^(torch|transformers|transformer-lens|peft|accelerate)=='
echo "== suite"
status=0
"$venv/bin/python" -m pytest -q "${PYTEST_ARGS:--x}" || status=$?
echo "== full freeze for constraints.txt: $venv/../freeze.txt (exit $status)"
exit $status

#!/usr/bin/env bash
# The test suite, setting up ./.venv first if needed (scripts/ensure_setup.sh). Arguments go to pytest.
# pytest's exit status 5 (no test collected) is a failure here, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_setup.sh || exit $?
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no test: failing" >&2
    exit 1
fi
exit "$status"

#!/usr/bin/env bash
# Run scripts/setup.sh unless ./.venv was already set up from the same pyproject.toml and setup.sh
# (a stamp in .venv records their hash). Sourced or run by scripts/main_job.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.spiritlens-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && .venv/bin/python -c "import spiritlens" >/dev/null 2>&1; then
    exit 0
fi
bash scripts/setup.sh
echo "$want" > "$stamp"

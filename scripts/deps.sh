#!/usr/bin/env bash
# Dependency lock and drift check.
#
#   scripts/deps.sh lock     resolve the newest versions pyproject.toml's ranges admit in a
#                            throwaway venv and write them to requirements/lock.txt
#   scripts/deps.sh latest   the drift check: the same resolution, then the fast tests
#                            (neither integration nor slow) against it, with a table of what
#                            differs from the lock
#
# The lock is a pip constraints file: `pip install -c requirements/lock.txt -e '.[dev]'`
# installs exactly the tested set (README, .ci/run). Versions drift in the ranges; the lock
# does not, so a new release cannot break a fresh install before `make lock` has tested it.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-}
venv=${PARAS2S_DEPS_VENV:-$(mktemp -d)/venv}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
echo "resolving the newest versions the ranges in pyproject.toml admit into $venv ..."
"$venv/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'

# torch's local label (+cpu) names this machine's wheel, not a release: the pin in
# pyproject.toml (torch==2.13.0) decides which build pip takes.
freeze() { "$venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; }

case "$what" in
  lock)
    {
      echo "# The tested set: every package of 'pip install -e .[dev]', resolved on $(date -u +%F)"
      echo "# with Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'). Regenerate with 'make lock', then run the tests."
      echo "# Use as constraints: pip install -c requirements/lock.txt -e '.[dev]'"
      freeze
    } > requirements/lock.txt
    echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"
    ;;
  latest)
    echo "newest admitted vs requirements/lock.txt:"
    freeze | "$venv/bin/python" scripts/lock_diff.py requirements/lock.txt
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not integration"
    ;;
  *)
    echo "usage: scripts/deps.sh lock|latest" >&2
    exit 2
    ;;
esac

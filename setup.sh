#!/usr/bin/env bash
# The same setup as `make setup`, for machines without make: a virtualenv with everything.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "ready: $VENV/bin/honcho start   (the whole system)   |   $VENV/bin/python -m pytest   (the tests)"

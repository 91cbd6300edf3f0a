#!/usr/bin/env bash
# Runs the test suite against the library versions of Colab's TPU runtime, in a venv of its own.
#
#   scripts/test_colab_versions.sh [--venv DIR] [PYTEST ARGS...]
#
#   scripts/test_colab_versions.sh                      # the whole suite, in .venv-colab
#   scripts/test_colab_versions.sh -x tests/test_inits.py
#   COLAB_VENV=/tmp/colab scripts/test_colab_versions.sh -k lsuv
#
# The venv (default .venv-colab under the repository root; --venv DIR or COLAB_VENV=DIR to
# choose another) is created if missing and reused otherwise. The project is installed
# editable with its dev extra, with the pins below given both on the pip command line and
# as a constraints file, so no dependency can pull in a newer version. PYTHON chooses the
# interpreter for a new venv (default python3; Colab runs Python 3.12).
# Exit code: pytest's, except that 5 (no tests collected) is reported as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${COLAB_VENV:-.venv-colab}"
case "${1:-}" in
  --venv) [ $# -ge 2 ] || { echo "error: --venv needs a directory" >&2; exit 2; }
          VENV="$2"; shift 2 ;;
  --venv=*) VENV="${1#--venv=}"; shift ;;
esac

# Colab's TPU runtime (jax 0.7.2 generation): the oldest versions pyproject.toml admits.
PINS=(
  jax==0.7.2
  jaxlib==0.7.2
  flax==0.11.2
  optax==0.2.8
  orbax-checkpoint==0.12.4
  chex==0.1.90
  tensorflow-datasets==4.9.10
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $("${PYTHON:-python3}" --version)"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
. "$VENV/bin/activate"
CONSTRAINTS="$VENV/colab-constraints.txt"
printf '%s\n' "${PINS[@]}" > "$CONSTRAINTS"

python -m pip install -q --upgrade pip
pip install -q -c "$CONSTRAINTS" -e '.[dev]' "${PINS[@]}"

echo "installed in $VENV:"
python - "${PINS[@]}" <<'PY'
import importlib.metadata as md
import sys

print(f"  {'python':22s} {sys.version.split()[0]}")
wrong = []
for pin in sys.argv[1:]:
  name, want = pin.split("==")
  have = md.version(name)
  print(f"  {name:22s} {have}")
  if have != want:
    wrong.append(f"{name} {have} (pinned {want})")
for name in ("numpy", "ml_collections", "matplotlib", "tensorstore"):
  try:
    print(f"  {name:22s} {md.version(name)}")
  except md.PackageNotFoundError:
    pass
if wrong:
  sys.exit("error: not the pinned versions: " + ", ".join(wrong))
PY

# As in .ci/run: pytest's exit code 5 means no tests were collected; say so and fail.
rc=0; python -m pytest -q "$@" || rc=$?
[ "$rc" -ne 5 ] || echo "test_colab_versions: pytest collected no tests" >&2
exit "$rc"

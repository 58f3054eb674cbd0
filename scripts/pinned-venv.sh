# Sourced by the training scripts: `pinned_venv DIR PIN...` makes a Python venv at DIR with exactly these pins,
# once; it is made again when the pins change (recorded in DIR/.ok). PYTHON picks the interpreter (python3).
pinned_venv() {
  local venv=$1
  shift
  if [ ! -f "$venv/.ok" ] || [ "$(cat "$venv/.ok")" != "$*" ]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    printf '%s' "$*" >"$venv/.ok"
  fi
}

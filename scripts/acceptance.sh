#!/usr/bin/env bash
# Acceptance checks on the team's larger fixture sets (tests/acceptance.rs: the detectors on the development
# split, the JPEG decoder on all of its frames). They are not in the repo, so plain `cargo test` leaves these
# out; this runs them and fails loudly when the sets are missing.
#   scripts/acceptance.sh [extra test-harness args]
# Environment: EMBER_SHARED, the shared folder (default: ../shared beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${EMBER_SHARED:-../shared}
if [ ! -f "$shared/fixtures/frames/labels.csv" ]; then
  echo "error: the shared fixture sets are missing: no $shared/fixtures/frames/labels.csv" >&2
  echo "       (set EMBER_SHARED to the folder holding fixtures/; CI has it at ../shared)" >&2
  exit 1
fi
EMBER_SHARED=$(cd "$shared" && pwd)
export EMBER_SHARED
echo "acceptance: shared sets at $EMBER_SHARED"
cargo test --locked --test acceptance -- "$@"

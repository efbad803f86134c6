#!/usr/bin/env bash
# The main job: set up, then run every available op through a layer (GPU when present, else CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd /tmp && "${PYTHON:-python3}" -m linattn.demo "$@"

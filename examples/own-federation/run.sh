#!/usr/bin/env bash
# Tune a federation of one's own, end to end (under 5 minutes on 2 CPU cores): build a small
# heterogeneous federation from Fashion-MNIST (6 participants, two architectures, an imagefolder
# of PNGs, a partition file, state_dict checkpoints), load it (no training), tune three pairs
# that each mix the two architectures, show them against the default and export the winners.
#
#   examples/own-federation/run.sh [OUT]      (OUT defaults to ./own-federation-demo)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-own-federation-demo}
PYTHON=${PYTHON:-python3}
DB="sqlite:///$OUT/tune.db"

"$PYTHON" "$HERE/build_federation.py" "$OUT"
time dkd-tune prepare --config "$OUT/own-federation.toml" --bundles "$OUT/bundles"
time dkd-tune --config "$OUT/own-federation.toml" --bundles "$OUT/bundles" --storage "$DB" \
  --pairs 0-1,2-3,4-5 --trials 12 --workers 2 --progress log
dkd-tune status --storage "$DB"
dkd-tune export --storage "$DB" --format csv --out "$OUT/best.csv"
echo "winners per pair: $OUT/best.csv"

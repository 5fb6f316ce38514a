#!/bin/sh
# Writes /etc/homeserver/<instance>.yaml for each instance: common.yaml, then the
# instance's own file, merged so that the instance's `worker` keys join the shared ones.
# Needs PyYAML (the homeserver's own environment has it: PYTHON=/opt/homeserver/.venv/bin/python).
set -eu
here=$(dirname "$0")
out=${1:-/etc/homeserver}
mkdir -p "$out"
for f in "$here"/config/*.yaml; do
    name=$(basename "$f" .yaml)
    [ "$name" = common ] && continue
    "${PYTHON:-python3}" - "$here/config/common.yaml" "$f" > "$out/$name.yaml" <<'PY'
import sys, yaml
common = yaml.safe_load(open(sys.argv[1]))
own = yaml.safe_load(open(sys.argv[2]))
worker = {**common.pop("worker", {}), **own.pop("worker", {})}
print(yaml.safe_dump({**common, **own, "worker": worker}, sort_keys=False), end="")
PY
done

#!/usr/bin/env bash
# Build the offline installation bundle on a machine with Internet access:
# dist/edge-bundle-<version>.tar.gz holds the wheels of the node and of every dependency
# (uvloop, its [fast] extra, included: http.loop = "uvloop" needs nothing more),
# install.sh, the example configuration, the systemd units, the NUT examples and the
# centre's HAProxy configuration.
#
# The wheels are built for this machine's Python (major.minor) and CPU: build on the same
# Debian release as the governorate servers (Debian 12 -> Python 3.11), or pass
# --python with an interpreter of that version. install.sh checks and refuses a mismatch.
#
# Usage: deploy/build-bundle.sh [--out DIR] [--python PYTHON]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/.." && pwd)"
out="$src/dist"
python="python3"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build-bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

version="$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$src/pyproject.toml")"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
name="edge-bundle-$version"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
bundle="$stage/$name"
mkdir -p "$bundle/wheels" "$stage/src"

# Build from a clean copy of what the package needs: a stale build/ directory in the
# working tree could otherwise slip removed modules into the wheel.
tar -C "$src" --exclude='__pycache__' --exclude='*.pyc' \
  -cf - pyproject.toml README.md outbox sync edge | tar -C "$stage/src" -xf -

echo "building wheels for Python $pyver ($(uname -m)) ..."
"$python" -m pip wheel --quiet --disable-pip-version-check \
  --wheel-dir "$bundle/wheels" "$stage/src[fast]" pip
(cd "$bundle/wheels" && sha256sum -- *.whl > SHA256SUMS)

install -m 0755 "$here/install.sh" "$bundle/install.sh"
install -m 0644 "$here/edge.toml.example" "$here/README.md" "$bundle/"
cp -R "$here/systemd" "$here/nut" "$here/haproxy" "$bundle/"
cat > "$bundle/MANIFEST" <<EOF
version=$version
python=$pyver
machine=$(uname -m)
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

mkdir -p "$out"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
built=("$bundle"/wheels/*.whl)
echo "$out/$name.tar.gz (${#built[@]} wheels)"

#!/usr/bin/env bash
# Re-vendors uPlot from npm at the pinned version: downloads the package with `npm pack`,
# refuses it unless its sha256 is the pinned one, and copies the ES module, the stylesheet
# and the licence into vendor/. Run from anywhere; needs npm and network access to npm.
set -euo pipefail
version=1.6.32
sha256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null)
tgz="$tmp/uplot-$version.tgz"
echo "$sha256  $tgz" | sha256sum -c --quiet - || { echo "uplot@$version: checksum mismatch" >&2; exit 1; }
tar -xzf "$tgz" -C "$tmp"
mkdir -p "$here/vendor"
cp "$tmp/package/dist/uPlot.esm.js" "$here/vendor/uPlot.esm.js"
cp "$tmp/package/dist/uPlot.min.css" "$here/vendor/uPlot.min.css"
cp "$tmp/package/LICENSE" "$here/vendor/uPlot.LICENSE"
echo "vendored uplot@$version into $here/vendor"

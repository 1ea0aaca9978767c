#!/usr/bin/env bash
# Before a GPU lease, on this machine (PyPI and ../shared/data reachable): fill the two ignored folders that
# travel with the device call's `carry: [".whl", ".data"]` (docs/benchmarks.md, "The GPU check"):
#   .whl/   simplejpeg's wheel for the device's python3 (CPython 3.12, manylinux x86_64), the one package
#           alexctl needs there that the device's image lacks
#   .data/  one Imagenette part, imagenette-224/train-1of2.tar (4,710 images, under 64 MiB)
# Idempotent; it says how much will travel (64 MiB at most, the working tree included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SHARED:-$root/../shared/data}"
py="${PY:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
cd "$root"

for folder in .whl .data; do
  git check-ignore -q "$folder/x" || { echo "gpu-prepare: $folder/ is not ignored by git; add /$folder/ to .gitignore" >&2; exit 2; }
done

# The version this tree is tested with (the venv's), so the device decodes as here.
version="${SIMPLEJPEG_VERSION:-$("$py" -c 'import simplejpeg; print(simplejpeg.__version__)' 2>/dev/null || echo 1.9.0)}"
mkdir -p .whl
find .whl -name 'simplejpeg-*.whl' ! -name "simplejpeg-$version-*" -delete  # one version: two stop the install
if ! ls .whl/simplejpeg-"$version"-cp312-*.whl > /dev/null 2>&1; then
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "simplejpeg==$version"
fi

part=imagenette-224/train-1of2.tar
mkdir -p .data/imagenette-224
if [ ! -f ".data/$part" ]; then
  cp "$shared/$part" ".data/$part.tmp.$$"
  mv -f ".data/$part.tmp.$$" ".data/$part"
fi
expected="$(awk -v f="$part" '$2 == f || $2 == "./"f {print $1}' "$shared/SHA256SUMS")"
actual="$(sha256sum ".data/$part" | cut -d' ' -f1)"
if [ -n "$expected" ] && [ "$expected" != "$actual" ]; then
  echo "gpu-prepare: .data/$part does not match $shared/SHA256SUMS; remove it and run again" >&2
  exit 1
fi

tree="$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)"
carried="$(du -cb .whl .data | tail -1 | cut -f1)"
total=$((tree + carried))
echo "gpu-prepare: $(ls .whl) and .data/$part ready; $((total / 1048576)) MiB travel (limit 64 MiB)"
[ "$total" -le $((64 * 1048576)) ] || { echo "gpu-prepare: over the 64 MiB a device call carries" >&2; exit 1; }

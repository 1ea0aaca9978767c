#!/usr/bin/env bash
# Before a GPU lease, on this machine (PyPI and ../shared/data reachable): fill the two ignored folders that
# travel with the device call's `carry: [".whl", ".data"]` (docs/benchmarks.md, "The GPU check"):
#   .whl/   simplejpeg's wheel for the device's python3 (CPython 3.12, manylinux x86_64), the one package
#           alexctl needs there that the device's image lacks
#   .data/  one Imagenette part, imagenette-224/train-1of2.tar (4,710 images, under 64 MiB), and in .data/tests/
#           the few photographs the CUDA-path tests read
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

# .data/tests/: what the CUDA-path tests read (`alexctl gpu-check`'s cuda-tests step sets ALEXCTL_SHARED_DATA to
# it): each Imagenette part cut to the first 12 images of each class, in the tar's order, so that the tests'
# fixtures extract exactly the photographs they extract here; the first 8 imagenet-samples; synsets.txt. ~2 MiB.
"$py" - "$shared" .data/tests <<'PY'
import shutil, sys, tarfile
from pathlib import Path
shared, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "imagenette-224").mkdir(parents=True, exist_ok=True)
for part in ("train-1of2.tar", "train-2of2.tar"):
    counts, target = {}, out / "imagenette-224" / part
    with tarfile.open(shared / "imagenette-224" / part) as tar, tarfile.open(f"{target}.tmp", "w") as cut:
        for member in tar:
            if member.isfile():
                wnid = member.name.split("/")[-2]
                counts[wnid] = counts.get(wnid, 0) + 1
                if counts[wnid] > 12:
                    continue
            cut.addfile(member, tar.extractfile(member) if member.isfile() else None)
    Path(f"{target}.tmp").replace(target)
(out / "imagenet-samples").mkdir(exist_ok=True)
for photo in sorted((shared / "imagenet-samples").glob("*.JPEG"))[:8]:
    shutil.copyfile(photo, out / "imagenet-samples" / photo.name)
shutil.copyfile(shared / "synsets.txt", out / "synsets.txt")
PY

tree="$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)"
carried="$(du -cb .whl .data | tail -1 | cut -f1)"
total=$((tree + carried))
echo "gpu-prepare: $(ls .whl), .data/$part and .data/tests ready; $((total / 1048576)) MiB travel (limit 64 MiB)"
[ "$total" -le $((64 * 1048576)) ] || { echo "gpu-prepare: over the 64 MiB a device call carries" >&2; exit 1; }

#!/usr/bin/env bash
# Wheels the device machine (Python 3.12, torch 2.11+cu130, no package index) lacks for bench_gpu
# (ImageHash and PyWavelets: the actor computes a pHash of every image):
# run here, in the repo root, once; then name .whl in the device tool's `carry` and start the
# command with the install line printed at the end (see the device tool's README on the machine that lends the GPU).
set -euo pipefail
DEST=${WHL_DIR:-.whl}  # .whl/ is in .gitignore
PKGS=(diffusers==0.42.0 open_clip_torch==3.3.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
      typing-inspection==0.4.5 ftfy==6.3.1 wcwidth==0.9.4 ImageHash==4.3.2 PyWavelets==1.9.0 torchao)
for p in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" "$p"
done
du -sh "$DEST"
echo 'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;'

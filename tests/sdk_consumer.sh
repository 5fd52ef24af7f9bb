#!/usr/bin/env bash
# Installs libpipe into a temporary prefix, builds an out-of-tree plugin with
# find_package(Pipe), and runs the *installed* pipe-train with it: proves the
# install rules, the CMake package, the plugin SDK, and that an installed
# libpipe finds its own plugins and models without the build tree.
# usage: sdk_consumer.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$source/tests/sdk" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
out=$("$work/prefix/bin/pipe-train" --plugin-dir "$work/consumer/plugins" \
        --model "$source/tests/data/scaled_mlp.toml" --describe 2>&1)
echo "$out"
grep -qF "model scaled-mlp: input float32[16], 4 layers, 708 parameters" <<<"$out"
# The installed binary must use the installed library and plugins, not the build tree's.
"$work/prefix/bin/pipe-train" --list-layers | grep -qF "from $work/prefix/" 
"$work/prefix/bin/pipe-train" --model gpt-tiny --describe | grep -qF "834,304 parameters"
echo "sdk consumer: OK"

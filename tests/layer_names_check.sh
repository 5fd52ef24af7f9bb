#!/usr/bin/env bash
# layer_names_check.sh SOURCE_DIR
#
# The core and the apps never name a plugin's layer type: a loss, an embedding or a block is known by its
# description (LayerDescription::loss, ::gemms, ...), so that a plugin can ship any of them. This collects every
# name the plugins register (registry.add("Name", ...)) and fails on any string literal "Name" in libpipe/ or
# apps/ outside comments.
set -u
src=$1
names=$(grep -rhoE 'registry\.add\("[A-Za-z0-9_]+"' "$src/plugins" | sed -E 's/.*\("(.*)"/\1/' | sort -u)
[ -n "$names" ] || { echo "FAIL: found no registered layer names under $src/plugins"; exit 1; }
found=0
for name in $names; do
  hits=$(grep -rnE --include='*.cpp' --include='*.hpp' --include='*.cu' --include='*.cuh' --include='*.h' \
    "\"$name\"" "$src/libpipe" "$src/apps" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(//|\*)')
  if [ -n "$hits" ]; then
    echo "FAIL: the layer type '$name' is named in core or app code:"
    echo "$hits"
    found=1
  fi
done
[ "$found" -eq 0 ] && echo "no core or app file names any of: $(echo $names)"
exit "$found"

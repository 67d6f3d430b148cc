#!/usr/bin/env bash
# Headless MuJoCo rendering needs Mesa's EGL (or OSMesa). Install them when missing and we are root;
# otherwise say what is missing and carry on: camera checks then skip with a message naming the cause.
set -u
missing=()
for pkg in libegl-mesa0 libosmesa6; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing headless rendering libraries: ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}; camera observations will be unavailable" >&2
else
  echo "warning: ${missing[*]} not installed (needs root: apt-get install -y ${missing[*]});" \
       "camera observations will be unavailable" >&2
fi
exit 0

#!/usr/bin/env bash
# Build the Debian package libnginx-mod-http-bytemark_<version>_<arch>.deb
# (and its -dbgsym companion) into build/deb/, with the standard Debian
# tooling for nginx modules: debian/ (debhelper compat 13, `dh $@ --with
# nginx`, dh_nginx from nginx-dev), dpkg-buildpackage -b.
#
#   bash scripts/build-deb.sh
#   apt-get install ./build/deb/libnginx-mod-http-bytemark_*_amd64.deb
#
# The build runs on a copy of the sources in build/deb/src/, so neither the
# checkout nor /usr/share/nginx/src gets build artefacts. The version is the
# top entry of debian/changelog. Prints the path of the .deb last.
# Installs what packaging needs when it is missing (scripts/deps.sh package:
# the build dependencies, nginx, dpkg-dev, debhelper; nothing of the test
# lab). Environment: BYTEMARK_SKIP_DEPS=1 skips that (t/80 sets it:
# scripts/test.sh has installed everything already).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/deb"
mkdir -p "$out"

# One build at a time in build/deb (the test t/80 may run one too).
exec 9> "$out/.lock"
flock 9

if [ -z "${BYTEMARK_SKIP_DEPS:-}" ]; then
    bash "$root/scripts/deps.sh" package
fi

cd "$root"
pkg=$(dpkg-parsechangelog -l debian/changelog -S Source)
ver=$(dpkg-parsechangelog -l debian/changelog -S Version)
arch=$(dpkg-architecture -q DEB_HOST_ARCH)
deb="$out/${pkg}_${ver}_${arch}.deb"

stage="$out/src"
rm -rf "$stage"
mkdir -p "$stage/$pkg-$ver"
# What the package is built from, and the documents it ships
# (debian/docs, debian/examples).
for f in config src debian README.md CHANGELOG.md LICENSE doc example sql/schema.sql; do
    [ -e "$f" ] || continue
    mkdir -p "$stage/$pkg-$ver/$(dirname "$f")"
    cp -a "$f" "$stage/$pkg-$ver/$f"
done

rm -f "$out"/*.deb "$out"/*.ddeb "$out"/*.changes "$out"/*.buildinfo
start=$(date +%s)
(
    cd "$stage/$pkg-$ver"
    export DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}"
    dpkg-buildpackage -b -us -uc
) > "$out/build.log" 2>&1 || {
    tail -40 "$out/build.log"
    echo "build-deb: dpkg-buildpackage failed; the whole log is $out/build.log" >&2
    exit 1
}
mv "$stage"/*.deb "$stage"/*.changes "$stage"/*.buildinfo "$out"/
rm -rf "$stage"

[ -f "$deb" ] || { echo "build-deb: $deb was not produced" >&2; exit 1; }
echo "build-deb: built in $(( $(date +%s) - start ))s (log: $out/build.log)"
dpkg-deb -f "$deb" Package Version Architecture Depends | sed 's/^/build-deb:   /'
echo "$deb"

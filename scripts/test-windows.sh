#!/usr/bin/env bash
# The Windows tests: runs `GOOS=windows go vet ./...`, then executes every
# package's Windows test binary under Debian's Wine (`go test -exec wine`).
# Needs root (it installs Wine and mingw-w64 from Debian when missing).
# Extra arguments go to `go test` (for example -v or -run TestPipe).
#
# What it sets up, all under one temporary directory that is removed on
# exit, also on failure (nothing in ~/.wine is touched):
#   * a private Wine prefix (WINEPREFIX; a fresh one takes about 10 s and
#     700 MB);
#   * the project's own bcryptprimitives.dll stand-in (scripts/wine), built
#     with mingw-w64 and put in the prefix's system32: Wine 8.0 lacks the
#     DLL that every Go >= 1.22 Windows binary loads at start;
#   * a persistent wineserver (`wineserver -p`, output to /dev/null so it
#     does not hold go test's output open), stopped with `wineserver -k`.
#
# Under Wine the OS-mutating calls (winipcfg Set/Delete, HCN) do not work:
# the tests that need them skip themselves (see internal/wintest).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
. scripts/deps.sh

zlmesh_install_windows_deps
for tool in wine wineserver x86_64-w64-mingw32-gcc; do
  command -v "$tool" >/dev/null || { echo "zlmesh: $tool is missing after installing Wine" >&2; exit 1; }
done

echo "== GOOS=windows go vet"
GOOS=windows go vet ./...

work=$(mktemp -d /tmp/zlmesh-wine.XXXXXX)
export WINEPREFIX="$work/prefix"
export WINEARCH=win64
export WINEDEBUG=-all
# No Mono or Gecko install dialogs when the prefix is made.
export WINEDLLOVERRIDES="mscoree,mshtml="
# The tests know they run under Wine (internal/wintest).
export ZLMESH_WINE=1
server_started=
cleanup() {
  if [ -n "$server_started" ]; then
    wineserver -k >/dev/null 2>&1 || true
    wineserver -w >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # so that cleanup runs on a signal too

echo "== Wine prefix $WINEPREFIX"
start=$SECONDS
x86_64-w64-mingw32-gcc -shared -O2 -s -o "$work/bcryptprimitives.dll" \
  scripts/wine/bcryptprimitives.c scripts/wine/bcryptprimitives.def -ladvapi32
mkdir -p "$WINEPREFIX"
wineserver -p >/dev/null 2>&1
server_started=1
wine wineboot --init >/dev/null 2>&1
cp "$work/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
echo "prefix ready in $((SECONDS - start)) s"

# Two places where Go's standard library (1.26) asks Windows for something
# Wine 8.0 does not have and fails where Windows would not; the test
# binaries are built with those two spots patched (go test -overlay, a copy
# in $work: GOROOT is not touched), so that t.TempDir and UDP sockets work:
#   * os.Remove deletes with FileDispositionInformationEx (POSIX semantics);
#     Wine answers STATUS_NOT_IMPLEMENTED, which Go does not take as "use
#     the fallback" (it does for STATUS_NOT_SUPPORTED): every t.TempDir
#     cleanup fails with "Invalid function";
#   * every UDP socket is set SIO_UDP_NETRESET, which Wine refuses with
#     WSAEOPNOTSUPP (10045): every UDP listen fails.
# Each patch must apply exactly once, or the script stops and says so.
goroot=$(go env GOROOT)
mkdir -p "$work/overlay"
patch_std() { # FILE PERL-SUBSTITUTION
  local src="$goroot/src/$1" dst="$work/overlay/${1//\//_}"
  perl -0pe "\$n = ($2); die \"no match\\n\" unless \$n == 1" "$src" >"$dst" ||
    { echo "zlmesh: cannot patch $1 for Wine (Go $(go env GOVERSION) changed it)" >&2; exit 1; }
  printf '"%s": "%s"' "$src" "$dst"
}
{
  printf '{"Replace": {'
  patch_std internal/syscall/windows/at_windows.go \
    's/(\n\s*)(STATUS_NOT_SUPPORTED:)/$1NTStatus(0xC0000002), \/\/ STATUS_NOT_IMPLEMENTED: Wine 8.0$1$2/g'
  printf ', '
  patch_std net/fd_windows.go \
    's/(SIO_UDP_NETRESET.*\n\s*if err != nil)( \{)/$1 \&\& err != syscall.Errno(10045)$2/g'
  printf '}}\n'
} >"$work/overlay.json"

echo "== GOOS=windows go test -exec wine"
GOOS=windows go test -count=1 -timeout 20m -overlay "$work/overlay.json" -exec wine "$@" ./...

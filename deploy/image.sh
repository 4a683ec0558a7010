#!/usr/bin/env bash
# Builds the egret-agent image (deploy/Dockerfile) from local files only: no
# base image and no registry. The image holds egret-agent, egret-loader and
# egret-cni, `nft` (the floating IPs' local-delivery guard) when the build
# machine has it, and exactly the shared libraries those programs load, as
# `ldd` resolves them on the build machine (a distroless-like root built
# from the build machine's own files).
#
#   deploy/image.sh [--tag egret-agent:dev] [--bin-dir DIR] [--builder buildah|podman|docker]
#                   [--builder-opt OPT]...
#
# --bin-dir: where the three binaries are (default: build them with cargo
#   into ${CARGO_TARGET_DIR:-target}/release).
# --builder-opt: a global option of the builder, before its `build`
#   subcommand (e.g. buildah's --root, --runroot, --storage-driver vfs).
# The build context is a fresh directory holding only the staged root
# (rootfs/), so nothing else of the work tree reaches the builder.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

tag=egret-agent:dev
bin_dir=
builder=
builder_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --builder) builder=$2; shift 2 ;;
    --builder-opt) builder_opts+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy/image.sh: unknown argument '$1' (--help)" >&2; exit 2 ;;
  esac
done
if [ -z "$builder" ]; then
  for b in buildah podman docker; do
    if command -v "$b" >/dev/null 2>&1; then builder=$b; break; fi
  done
  [ -n "$builder" ] || { echo "deploy/image.sh: no buildah, podman or docker" >&2; exit 1; }
fi
if [ -z "$bin_dir" ]; then
  (cd "$repo" && cargo build --release --locked -p egret-runtime --bin egret-agent \
    -p egret-loader --bin egret-loader -p egret-cni --bin egret-cni)
  bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/egret-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/usr/sbin"

# copy_with_libs FILE DEST: FILE at DEST in the root, and every library it
# loads (and the dynamic loader) at its own path
copy_with_libs() {
  install -m 0755 "$1" "$root$2"
  ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
for bin in egret-agent egret-loader egret-cni; do
  [ -x "$bin_dir/$bin" ] || { echo "deploy/image.sh: no $bin_dir/$bin" >&2; exit 1; }
  copy_with_libs "$bin_dir/$bin" "/usr/local/bin/$bin"
  # the release profile keeps line tables for backtraces; the image does not need them
  if command -v strip >/dev/null 2>&1; then strip --strip-debug "$root/usr/local/bin/$bin"; fi
done
if nft=$(command -v nft); then
  copy_with_libs "$nft" /usr/sbin/nft
else
  echo "deploy/image.sh: no nft on this machine: the image's floating IPs will have no local-delivery guard" >&2
fi
# the mount points the DaemonSet uses (a read-only root cannot make them)
mkdir -p "$root/sys/fs/bpf" "$root/run/egret" "$root/host/opt/cni/bin" "$root/host/etc/cni/net.d"

"$builder" "${builder_opts[@]}" build -f "$repo/deploy/Dockerfile" -t "$tag" "$ctx"

#!/bin/bash
# ZStack-Py installer for Debian 12, run as root. Idempotent: run it again to update.
#
#   scripts/install.sh              install packages; build a wheel of this checkout and install it as a release
#                                   (/opt/zstack-py/releases/<version>/, its own venv; /opt/zstack-py/current points
#                                   at the one in use); start libvirtd and the controller. The checkout is not
#                                   needed afterwards. A machine set up with --dev (and no release) keeps its
#                                   editable venv unless --release is given.
#   scripts/install.sh -u           upgrade: install this checkout's release beside the current one, then
#                                   `zstack-ctl upgrade` (pre-flight, database backup, migrate, start, verify;
#                                   everything rolled back on failure)
#   scripts/install.sh --wheel F    install (or with -u upgrade to) the wheel F instead of building one
#   scripts/install.sh --no-start   install only
#   scripts/install.sh --dev        editable install in /opt/zstack-py/venv plus the test tools (pytest, ruff,
#                                   mypy) and test-only packages (what scripts/run-tests uses)
#   scripts/install.sh --mirror M   Debian and PyPI mirrors: aliyun, tuna, or DEBIAN_URL[,PYPI_INDEX_URL]
#
# Environment: ZSTACK_ADMIN_PASSWORD (admin password at first start; default "password", with a warning),
#              ZSTACK_VENV (development venv, default /opt/zstack-py/venv), ZSTACK_PREFIX (releases, default
#              /opt/zstack-py).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${ZSTACK_VENV:-/opt/zstack-py/venv}
PREFIX=${ZSTACK_PREFIX:-/opt/zstack-py}
START=1
DEV=0
RELEASE=0
UPGRADE=0
WHEEL=""
MIRROR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-start) START=0 ;;
    --dev) DEV=1 ;;
    --release) RELEASE=1 ;;
    -u|--upgrade) UPGRADE=1; RELEASE=1 ;;
    --wheel) WHEEL=$(realpath "${2:?--wheel needs a file}"); shift ;;
    --mirror) MIRROR=${2:?--mirror needs aliyun, tuna or DEBIAN_URL[,PYPI_INDEX_URL]}; shift ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ $DEV = 1 ] && [ $RELEASE = 1 ] && { echo "install.sh: --dev cannot be combined with -u/--release" >&2; exit 2; }
# Release install unless --dev, or this machine already has a development install and no release.
if [ $DEV = 0 ] && [ $RELEASE = 0 ] && [ -x "$VENV/bin/python" ] && [ ! -L "$PREFIX/current" ]; then
  echo "install.sh: $VENV is a development install; updating it (--release installs a release instead)" >&2
fi
# -u upgrades a release (backup, migration, rollback: zstack-ctl upgrade). A development install has no release to
# return to: switching it to a release here would migrate its database at the next start with no backup and no
# rollback, so -u refuses and says how to move over (zstack-ctl backup first, then --release).
if [ $UPGRADE = 1 ] && [ ! -L "$PREFIX/current" ] && [ -x "$VENV/bin/python" ]; then
  echo "install.sh: -u upgrades an installed release, and this machine runs a development install ($VENV, no" \
       "$PREFIX/current): nothing changed. Back its database up (zstack-ctl backup), then run" \
       "scripts/install.sh --release to install a release, or scripts/install.sh --dev to update the development" \
       "install" >&2
  exit 2
fi
if [ $DEV = 0 ] && { [ $RELEASE = 1 ] || [ ! -x "$VENV/bin/python" ] || [ -L "$PREFIX/current" ]; }; then
  RELEASE=1
fi
DEB_MIRROR=""
case "$MIRROR" in
  "") ;;
  aliyun) DEB_MIRROR=https://mirrors.aliyun.com/debian; export PIP_INDEX_URL=https://mirrors.aliyun.com/pypi/simple/ ;;
  tuna) DEB_MIRROR=https://mirrors.tuna.tsinghua.edu.cn/debian
        export PIP_INDEX_URL=https://pypi.tuna.tsinghua.edu.cn/simple ;;
  http://*|https://*)
    DEB_MIRROR=${MIRROR%%,*}
    [ "$MIRROR" != "$DEB_MIRROR" ] && export PIP_INDEX_URL=${MIRROR#*,} ;;
  *) echo "install.sh: invalid --mirror '$MIRROR': use aliyun, tuna or DEBIAN_URL[,PYPI_INDEX_URL]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 2; }

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- system packages ---------------------------------------------------------------------------
# Hypervisor and data planes: libvirt + QEMU (TCG/KVM), qemu-img, dnsmasq (flat DHCP), iproute2/ebtables/
# iptables/bridge-utils (namespaces, bridges, anti-spoofing), nftables (security groups), openssh (AddKvmHost,
# SFTP backup storage).
# Build: libvirt-dev, pkg-config, gcc, python3-dev (libvirt-python), python3-venv.
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
      dnsmasq-base dnsmasq-utils iproute2 ebtables iptables nftables bridge-utils openssh-server openssh-client sshpass
      libvirt-dev pkg-config gcc python3-venv python3-dev cpio zstd curl ca-certificates procps psmisc)
# Tests and the lab: busybox (udhcpc as a DHCP client in namespaces), cloud-init (real datasources
# against the metadata service), isc-dhcp-client, util-linux (unshare/nsenter), tiny-image build tools
# come from .deb files unpacked by scripts/build-tiny-image itself. mmdebstrap + systemd-container: testbed
# hosts that boot a real systemd (`scripts/testbed up --mode nspawn`: root tree built once, hosts under nspawn).
# Browser tests of the web console (tests/browser): headless Chromium and its WebDriver from Debian (Selenium
# is given both paths, so nothing is downloaded), and a CJK font so 简体中文/繁體中文 pages render in screenshots.
DEV_PKGS=(busybox cloud-init isc-dhcp-client util-linux file curl mmdebstrap systemd-container chromium chromium-driver
          fonts-wqy-microhei)
want=("${PKGS[@]}")
[ $DEV = 1 ] && want+=("${DEV_PKGS[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Keep cloud-init (a test dependency: we only use its library) from ever configuring this machine.
[ $DEV = 1 ] && { mkdir -p /etc/cloud; touch /etc/cloud/cloud-init.disabled; }
if [ ${#missing[@]} -gt 0 ]; then
  say "installing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT_OPTS=()
  if [ -n "$DEB_MIRROR" ]; then   # this run only: the machine's own sources are left as they are
    src=$(mktemp); trap 'rm -f "$src"' EXIT
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$DEB_MIRROR" "$DEB_MIRROR" > "$src"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$src" -o "Dir::Etc::sourceparts=-")
  fi
  apt-get "${APT_OPTS[@]}" update -q
  apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${missing[@]}"
fi

# --- libvirt ---------------------------------------------------------------------------------------
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -G kvm -s /usr/sbin/nologin libvirt-qemu
if ! grep -q '^# zstack-py' /etc/libvirt/qemu.conf 2>/dev/null; then
  say "writing /etc/libvirt/qemu.conf"
  cat > /etc/libvirt/qemu.conf <<'QEMU'
# zstack-py: guests run as root with no security driver, files owned by the agent
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
QEMU
fi
mkdir -p /var/log/libvirt /run/libvirt
if [ -d /run/systemd/system ]; then
  systemctl enable --now virtlogd libvirtd >/dev/null
else
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
fi
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null || { echo "libvirtd did not start" >&2; exit 1; }

# --- Python package ----------------------------------------------------------------------------
if [ $RELEASE = 0 ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    /usr/bin/python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  extra=""
  [ $DEV = 1 ] && extra="[test]"
  say "installing zstack-py into $VENV"
  # pyproject.toml's dependencies (aiohttp, prometheus_client, ...) and, with --dev, its test extras
  # (pytest, ruff, mypy, schemathesis==4.32.5 for tests/unit/test_api_fuzz.py).
  "$VENV/bin/pip" install -q -e "$REPO$extra"
  for c in zstack-cli zstack-ctl zstack-kvmagent; do ln -sf "$VENV/bin/$c" "/usr/local/bin/$c"; done
  BIN=$VENV/bin
else
  # controller.release is standard library only: the system python runs it from this checkout.
  rel() { PYTHONPATH="$REPO" /usr/bin/python3 -m controller.release --prefix "$PREFIX" "$@"; }
  if [ -z "$WHEEL" ]; then
    say "building the wheel of $REPO"
    WHEEL=$(rel build "$REPO" "$PREFIX/dist")
  fi
  version=$(basename "$WHEEL" | sed -n 's/^zstack_py-\([^-]*\)-py3-none-any\.whl$/\1/p')
  [ -n "$version" ] || { echo "install.sh: $WHEEL is not a zstack-py wheel" >&2; exit 2; }
  NEW=""
  if [ ! -L "$PREFIX/current" ]; then
    say "installing release $version into $PREFIX/releases/$version"
    NEW=$(rel install --switch "$WHEEL")
  elif [ "$(readlink -f "$PREFIX/current")" = "$(readlink -f "$PREFIX/releases/$version")" ]; then
    say "release $version is already the one in use ($PREFIX/current); a new version upgrades"
  elif [ $UPGRADE = 1 ]; then
    NEW=$(rel install "$WHEEL")
  else
    echo "install.sh: release $(basename "$(readlink -f "$PREFIX/current")") is installed; run with -u to upgrade" \
         "to $version" >&2
    exit 2
  fi
  mkdir -p /usr/local/bin
  for c in zstack-cli zstack-ctl zstack-kvmagent; do ln -sfn "$PREFIX/current/venv/bin/$c" "/usr/local/bin/$c"; done
  BIN=$PREFIX/current/venv/bin
fi

# --- controller config and service -----------------------------------------------------------------
mkdir -p /etc/zstack-py /var/lib/zstack-py /var/log/zstack-py /var/lib/zstack-py/import

# --- the virtual router image (issue 12) --------------------------------------------------------------
# Built from Debian packages (scripts/build-vr-image, cached) and put into the controller's system image
# directory as zstack-vrouter-<agent version>.qcow2. An image lives on a backup storage and a fresh install
# has none yet, so the controller finishes the registration itself: it registers every such file, once, as
# a system image on the first backup storage the admin adds (or, after an upgrade, when it starts):
# controller/backup/system_images.py. Skipped with --dev (tests build their own copy) and on failure (a
# warning: routers then need an image added by hand).
mkdir -p /var/lib/zstack-py/import/system
if [ $DEV = 0 ]; then
  say "building the virtual router image"
  if vr=$(/usr/bin/python3 "$REPO/scripts/build-vr-image" --out /var/lib/zstack-py/vrouter-build); then
    v=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
          /var/lib/zstack-py/vrouter-build/stamp.json)
    install -m 644 "$vr" "/var/lib/zstack-py/import/system/zstack-vrouter-$v.qcow2"
  else
    echo "warning: the virtual router image was not built; see scripts/build-vr-image" >&2
  fi
fi
if [ ! -f /etc/zstack-py/controller.json ]; then
  pw=${ZSTACK_ADMIN_PASSWORD:-password}
  [ "$pw" = password ] && echo "warning: the admin password is the default 'password'; set ZSTACK_ADMIN_PASSWORD" >&2
  "$BIN/python" -c 'import json,sys; print(json.dumps({"admin_password": sys.argv[1]}, indent=2))' "$pw" \
    > /etc/zstack-py/controller.json
  chmod 600 /etc/zstack-py/controller.json
fi
if [ -d /run/systemd/system ]; then
  # The unit runs the release in use (through $PREFIX/current) or the development venv.
  sed "s#^ExecStart=/opt/zstack-py/venv/bin/python#ExecStart=$BIN/python#" \
    "$REPO/scripts/systemd/zstack-py-controller.service" > /etc/systemd/system/zstack-py-controller.service
  chmod 644 /etc/systemd/system/zstack-py-controller.service
  systemctl daemon-reload
fi
if [ $RELEASE = 1 ] && [ $UPGRADE = 1 ] && [ -n "$NEW" ]; then
  say "upgrading to $NEW"
  [ -d /run/systemd/system ] && systemctl enable zstack-py-controller >/dev/null
  # The NEW release's zstack-ctl drives the upgrade (its pre-flight, backup, migration and rollback).
  "$NEW/venv/bin/zstack-ctl" upgrade "$NEW"
elif [ $START = 1 ]; then
  say "starting the controller"
  if [ -d /run/systemd/system ]; then systemctl enable zstack-py-controller >/dev/null; fi
  zstack-ctl start
  zstack-ctl status
fi
say "done"

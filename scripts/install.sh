#!/bin/bash
# ZStack-Py installer for Debian 12, run as root. Idempotent: run it again to update.
#
#   scripts/install.sh              install packages, the venv and the package; start libvirtd and the controller
#   scripts/install.sh --no-start   install only (the test runner uses this)
#   scripts/install.sh --dev        also install the test tools (pytest, ruff, mypy) and test-only packages
#
# Environment: ZSTACK_ADMIN_PASSWORD (admin password at first start; default "password", with a warning),
#              ZSTACK_VENV (default /opt/zstack-py/venv).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${ZSTACK_VENV:-/opt/zstack-py/venv}
START=1
DEV=0
for a in "$@"; do
  case "$a" in
    --no-start) START=0 ;;
    --dev) DEV=1 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 2; }

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- system packages ---------------------------------------------------------------------------
# Hypervisor and data planes: libvirt + QEMU (TCG/KVM), qemu-img, dnsmasq (flat DHCP), iproute2/ebtables/
# iptables/bridge-utils (namespaces, bridges, anti-spoofing), openssh (AddKvmHost, SFTP backup storage).
# Build: libvirt-dev, pkg-config, gcc, python3-dev (libvirt-python), python3-venv.
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
      dnsmasq-base dnsmasq-utils iproute2 ebtables iptables bridge-utils openssh-server openssh-client sshpass
      libvirt-dev pkg-config gcc python3-venv python3-dev cpio zstd curl ca-certificates procps psmisc)
# Tests and the lab: busybox (udhcpc as a DHCP client in namespaces), cloud-init (real datasources
# against the metadata service), isc-dhcp-client, util-linux (unshare/nsenter), tiny-image build tools
# come from .deb files unpacked by scripts/build-tiny-image itself. mmdebstrap + systemd-container: testbed
# hosts that boot a real systemd (`scripts/testbed up --mode nspawn`: root tree built once, hosts under nspawn).
DEV_PKGS=(busybox cloud-init isc-dhcp-client util-linux file curl mmdebstrap systemd-container)
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
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
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
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
extra=""
[ $DEV = 1 ] && extra="[test]"
say "installing zstack-py into $VENV"
"$VENV/bin/pip" install -q -e "$REPO$extra"
for c in zstack-cli zstack-ctl zstack-kvmagent; do ln -sf "$VENV/bin/$c" "/usr/local/bin/$c"; done

# --- controller config and service -----------------------------------------------------------------
mkdir -p /etc/zstack-py /var/lib/zstack-py /var/log/zstack-py
if [ ! -f /etc/zstack-py/controller.json ]; then
  pw=${ZSTACK_ADMIN_PASSWORD:-password}
  [ "$pw" = password ] && echo "warning: the admin password is the default 'password'; set ZSTACK_ADMIN_PASSWORD" >&2
  "$VENV/bin/python" -c 'import json,sys; print(json.dumps({"admin_password": sys.argv[1]}, indent=2))' "$pw" \
    > /etc/zstack-py/controller.json
  chmod 600 /etc/zstack-py/controller.json
fi
if [ -d /run/systemd/system ]; then
  install -m 644 "$REPO/scripts/systemd/zstack-py-controller.service" /etc/systemd/system/
  systemctl daemon-reload
fi
if [ $START = 1 ]; then
  say "starting the controller"
  if [ -d /run/systemd/system ]; then systemctl enable zstack-py-controller >/dev/null; fi
  zstack-ctl start
  zstack-ctl status
fi
say "done"

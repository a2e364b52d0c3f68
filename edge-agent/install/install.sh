#!/bin/sh
# Installs the Spoke edge agent on a board (Raspberry Pi OS, Debian, Ubuntu):
# the binary, its config with the hub address and a join token, a system
# user, its data directory, and a hardened systemd unit, enabled at boot.
#
#   sudo ./install.sh --binary ./spoke-agent --hub https://HUB:6443 \
#        --token BOOTSTRAP_TOKEN --ca ca.crt [--name NODE] [--allow-host-path DIR]...
#   sudo ./install.sh --uninstall [--purge]
#
# --root DIR installs under DIR instead of / (for images and tests); then
# nothing is started, and the unit is enabled by its symlink alone.
# The node name defaults to the machine's host name.
set -eu

root=""
binary=""
hub=""
token=""
ca=""
name=""
allow=""
uninstall=0
purge=0
start=1

die() { echo "install.sh: $*" >&2; exit 1; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) need_value "$@"; root="${2%/}"; shift 2 ;;
    --binary) need_value "$@"; binary="$2"; shift 2 ;;
    --hub) need_value "$@"; hub="$2"; shift 2 ;;
    --token) need_value "$@"; token="$2"; shift 2 ;;
    --ca) need_value "$@"; ca="$2"; shift 2 ;;
    --name) need_value "$@"; name="$2"; shift 2 ;;
    --allow-host-path) need_value "$@"; allow="$allow $2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
bin="$root/usr/local/bin/spoke-agent"
etc="$root/etc/spoke"
unit="$root/etc/systemd/system/spoke-agent.service"
wants="$root/etc/systemd/system/multi-user.target.wants/spoke-agent.service"
data="$root/var/lib/spoke-agent"
live=0
[ -z "$root" ] && [ "$start" -eq 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && live=1

if [ "$uninstall" -eq 1 ]; then
  [ "$live" -eq 1 ] && systemctl disable --now spoke-agent >/dev/null 2>&1 || true
  rm -f "$wants" "$unit" "$bin"
  [ "$live" -eq 1 ] && systemctl daemon-reload
  if [ "$purge" -eq 1 ]; then
    rm -rf "$etc" "$data"
    echo "spoke-agent removed, with its config and data (pods, logs, credentials)."
  else
    echo "spoke-agent removed. Kept $etc and $data (--purge removes them)."
  fi
  exit 0
fi

[ -n "$binary" ] || die "--binary FILE is required (the spoke-agent built for this board)"
[ -f "$binary" ] || die "--binary $binary: no such file"
[ -n "$hub" ] || die "--hub URL is required (https://HUB:6443 to join with a token)"
case "$hub" in
  https://*) [ -n "$token" ] || [ -f "$data/credentials.json" ] \
      || die "--token is required with an https:// hub (spoke token create NAME --role bootstrap --ttl 1h)" ;;
  mqtt://*|mqtts://*) ;;
  *) die "--hub $hub: must start with https://, mqtts:// or mqtt://" ;;
esac
[ -z "$ca" ] || [ -f "$ca" ] || die "--ca $ca: no such file"
if [ -z "$name" ]; then
  name="$(cat "$root/etc/hostname" 2>/dev/null || hostname)"
fi
name="$(printf '%s' "$name" | tr 'A-Z' 'a-z')"
printf '%s' "$name" | grep -Eq '^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$' \
  || die "--name $name: must be lower-case letters, digits, '-' and '.' (a DNS-1123 name)"

if [ -z "$root" ] && ! getent passwd spoke-agent >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/spoke-agent \
    --shell /usr/sbin/nologin spoke-agent
fi

mkdir -p "$(dirname "$bin")" "$etc" "$(dirname "$unit")" "$(dirname "$wants")" "$data"
install -m 0755 "$binary" "$bin"
install -m 0644 "$here/spoke-agent.service" "$unit"
chmod 0700 "$data"

# The config holds a secret (the join token): only the agent's user reads it.
umask 077
tmp="$etc/.agent.yaml.tmp"
{
  echo "# Written by install.sh. Keys are spoke-agent's long options (spoke-agent --help)."
  echo "hub: $hub"
  echo "name: $name"
  [ -n "$token" ] && echo "join-token: $token"
  if [ -n "$ca" ]; then
    install -m 0644 "$ca" "$etc/ca.crt"
    echo "ca: /etc/spoke/ca.crt"
  fi
  if [ -n "$allow" ]; then
    echo "allow-host-path:"
    for p in $allow; do echo "  - $p"; done
  fi
} > "$tmp"
chmod 0600 "$tmp"
mv "$tmp" "$etc/agent.yaml"
if [ -z "$root" ]; then
  chown spoke-agent:spoke-agent "$etc/agent.yaml" "$data"
fi

ln -sf ../spoke-agent.service "$wants"
if [ "$live" -eq 1 ]; then
  systemctl daemon-reload
  systemctl enable --now spoke-agent >/dev/null
  echo "spoke-agent installed and started as node $name. Follow it: journalctl -u spoke-agent -f"
else
  echo "spoke-agent installed under ${root:-/} as node $name; it starts at the next boot."
fi

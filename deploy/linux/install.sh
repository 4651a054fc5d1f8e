#!/usr/bin/env bash
# Installs connwatch on a Linux host as a systemd service, run as root:
#   install.sh aggregator [--bin DIR] [--config FILE]
#   install.sh collector  [--bin DIR] [--config FILE]
# It creates the `connwatch` system user, copies the binary to /usr/local/bin, the
# unit to /etc/systemd/system, man pages and completions, puts the config in
# /etc/connwatch (only when none is there), checks it with --check-config, then
# enables and starts the unit. Certificates go in /etc/connwatch/certs beforehand
# (`connwatch-aggregator ca init` / `ca issue` print which file goes where).
# Running it again upgrades the binary and unit and restarts the service; an existing
# config is never overwritten.
set -euo pipefail

usage() {
  echo "usage: $0 aggregator|collector [--bin DIR] [--config FILE]" >&2
  exit 2
}

role=${1:-}
[[ $role == aggregator || $role == collector ]] || usage
shift
here=$(cd "$(dirname "$0")" && pwd)
bin_dir="$here/../../target/release"
config=""
while (($#)); do
  case $1 in
    --bin) bin_dir=${2:?}; shift 2 ;;
    --config) config=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n $config ]] || config="$here/../$role.example.toml"
name="connwatch-$role"
binary="$bin_dir/$name"

if [[ $(id -u) -ne 0 ]]; then
  echo "$0: run as root" >&2
  exit 1
fi
[[ -x $binary ]] || { echo "$0: $binary not found; build with cargo build --release or pass --bin" >&2; exit 1; }
[[ -f $config ]] || { echo "$0: config $config not found" >&2; exit 1; }

echo "== user"
if ! getent passwd connwatch >/dev/null; then
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin connwatch
fi

echo "== files"
install -m 0755 "$binary" "/usr/local/bin/$name"
install -m 0644 "$here/$name.service" "/etc/systemd/system/$name.service"
install -d -m 0750 -o root -g connwatch /etc/connwatch /etc/connwatch/certs
if [[ ! -e /etc/connwatch/$role.toml ]]; then
  install -m 0640 -o root -g connwatch "$config" "/etc/connwatch/$role.toml"
  echo "installed /etc/connwatch/$role.toml from $config: review it"
fi
# The service user reads certificates and keys; only root may change them.
find /etc/connwatch/certs -type f -exec chown root:connwatch {} + -exec chmod 0640 {} +

install -d /usr/local/share/man/man1
"/usr/local/bin/$name" man --dir /usr/local/share/man/man1 >/dev/null
install -d /usr/share/bash-completion/completions
"/usr/local/bin/$name" completions bash >"/usr/share/bash-completion/completions/$name"

echo "== check"
# As the service user, so unreadable certificates show now, not at start.
runuser -u connwatch -- "/usr/local/bin/$name" \
  "$([[ $role == aggregator ]] && echo serve || echo run)" \
  --config "/etc/connwatch/$role.toml" --check-config

echo "== start"
systemctl daemon-reload
systemctl enable "$name.service"
systemctl restart "$name.service"
systemctl --no-pager --lines=5 status "$name.service" || true
if [[ $role == collector ]]; then
  echo "probe (what this host reports):"
  runuser -u connwatch -- /usr/local/bin/connwatch-collector probe --config /etc/connwatch/collector.toml || true
fi

#!/usr/bin/env bash
# Install or upgrade the governorate edge node from an offline bundle (no network used).
#
#   sudo ./install.sh                      run from the unpacked edge-bundle-<version>/
#   sudo ./install.sh edge-bundle-0.1.0.tar.gz
#   ./install.sh --prefix /tmp/root ...    everything under /tmp/root: no user, no systemctl
#   --python PYTHON                        the interpreter for the venv (default python3)
#
# Lays out:  /opt/edge            the program (a Python venv; replaced on upgrade)
#            /etc/edge/edge.toml  the configuration (made from the example once, never
#                                 overwritten; the new example is put beside it)
#            /etc/edge/centre.secret, tokens.toml  secrets, owner edge, mode 600, made once
#            /var/lib/edge        the database, owner edge (kept on upgrade)
#            /var/backups/edge    daily backups (edge-backup.timer)
#            /etc/systemd/system/edge.service, edge-backup.{service,timer}
# Running it again upgrades in place: the node is stopped, the program replaced, the
# node started again; configuration, secrets and data are kept.
set -euo pipefail

usage() { sed -n '2,17p' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

prefix=""
archive=""
python="python3"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2%/}"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) archive="$1"; shift ;;
  esac
done

if [ -n "$archive" ]; then
  unpacked="$(mktemp -d)"
  trap 'rm -rf "$unpacked"' EXIT
  tar -C "$unpacked" -xzf "$archive"
  bundle="$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d -name 'edge-bundle-*' | head -n 1)"
else
  bundle="$(cd "$(dirname "$0")" && pwd)"
fi
if [ -z "$bundle" ] || [ ! -f "$bundle/MANIFEST" ] || [ ! -d "$bundle/wheels" ]; then
  die "no bundle here: run the install.sh inside edge-bundle-<version>/, or give the .tar.gz"
fi
if [ -z "$prefix" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or use --prefix DIR for a trial install"
fi

manifest() { sed -n "s/^$1=//p" "$bundle/MANIFEST"; }
version="$(manifest version)"
wheels="$bundle/wheels"
command -v "$python" >/dev/null || die "$python not found: install Debian's python3 package"
have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$have" = "$(manifest python)" ] || die "this bundle was built for Python $(manifest python)" \
  "and this server has $have: build the bundle on the same Debian release as this server"
[ "$(uname -m)" = "$(manifest machine)" ] || die "bundle for $(manifest machine), not $(uname -m)"
(cd "$wheels" && sha256sum --check --quiet SHA256SUMS) \
  || die "the bundle is damaged (checksums differ): copy it again"

venv="$prefix/opt/edge"
etc="$prefix/etc/edge"
data="$prefix/var/lib/edge"
backups="$prefix/var/backups/edge"
units="$prefix/etc/systemd/system"

# Who owns what. A trial install under --prefix belongs to whoever runs it.
if [ -z "$prefix" ]; then
  if ! getent passwd edge >/dev/null; then
    say "creating the system user edge"
    useradd --system --user-group --home-dir /var/lib/edge --no-create-home \
      --shell /usr/sbin/nologin --comment "governorate edge node" edge
  fi
  owner=(-o edge -g edge)
  conf_owner=(-o root -g edge)
else
  owner=()
  conf_owner=()
fi

systemd_up() { [ -z "$prefix" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
was_running=0
if systemd_up && systemctl is-active --quiet edge.service; then
  say "stopping the running node for the upgrade"
  systemctl stop edge.service
  was_running=1
fi

# pip sees only the bundle: no index, no pip.conf, no PIP_* from the environment.
offline_pip() {
  local drop=() var
  while read -r var; do
    case "$var" in PIP_*) drop+=(-u "$var") ;; esac
  done < <(compgen -e)
  env "${drop[@]}" PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$@" --no-index --find-links "$wheels" --quiet
}

if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$have" ]; then
  say "the Python under $venv changed: rebuilding it"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  # --without-pip: Debian's python3 lacks ensurepip unless python3-venv is installed;
  # pip comes from the bundle instead.
  "$python" -m venv --without-pip "$venv"
fi
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  pip_wheel="$(find "$wheels" -name 'pip-*.whl' | head -n 1)"
  [ -n "$pip_wheel" ] || die "the bundle has no pip wheel"
  offline_pip "$venv/bin/python" "$pip_wheel/pip" install pip
fi
say "installing governorate-edge $version from $(find "$wheels" -name '*.whl' | wc -l) wheels"
# [fast]: uvloop too, so that http.loop = "uvloop" works without another download.
offline_pip "$venv/bin/python" -m pip install --force-reinstall "governorate-edge[fast]==$version"
install -d -m 0755 "$venv/share"
install -m 0644 "$bundle/README.md" "$bundle/edge.toml.example" "$venv/share/"
rm -rf "$venv/share/systemd" "$venv/share/nut" "$venv/share/haproxy"
cp -R "$bundle/systemd" "$bundle/nut" "$bundle/haproxy" "$venv/share/"

# Paths inside the configuration and the units follow the prefix.
relocate() {
  sed -e "s#/opt/edge#$prefix/opt/edge#g" -e "s#/etc/edge/#$prefix/etc/edge/#g" \
    -e "s#/var/lib/edge#$prefix/var/lib/edge#g" -e "s#/var/backups/edge#$prefix/var/backups/edge#g" "$1"
}

install -d -m 0750 "${conf_owner[@]}" "$etc"
install -d -m 0750 "${owner[@]}" "$data" "$backups"
install -m 0644 "$bundle/edge.toml.example" "$etc/edge.toml.example"
new_config=0
if [ ! -e "$etc/edge.toml" ]; then
  relocate "$bundle/edge.toml.example" > "$etc/edge.toml.new"
  install -m 0640 "${conf_owner[@]}" "$etc/edge.toml.new" "$etc/edge.toml"
  rm -f "$etc/edge.toml.new"
  new_config=1
  say "wrote $etc/edge.toml from the example: edit node.id, node.governorate, centre.url"
else
  say "kept $etc/edge.toml (compare with $etc/edge.toml.example for new keys)"
fi
if [ ! -e "$etc/tokens.toml" ]; then
  printf '# Client tokens (hashes only). Add one: edge token add --config %s --name NAME\n' \
    "$etc/edge.toml" > "$etc/tokens.toml.new"
  install -m 0600 "${owner[@]}" "$etc/tokens.toml.new" "$etc/tokens.toml"
  rm -f "$etc/tokens.toml.new"
fi
if [ ! -e "$etc/centre.secret" ]; then
  # Generated here so the node can start at once; the centre must get the same text
  # for [nodes.<id>] before it accepts this node (deploy/README.md, "Connect to the centre").
  (umask 077 && "$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' \
    > "$etc/centre.secret.new")
  install -m 0600 "${owner[@]}" "$etc/centre.secret.new" "$etc/centre.secret"
  rm -f "$etc/centre.secret.new"
  say "generated $etc/centre.secret: give its content to the centre's operators"
fi

install -d -m 0755 "$units"
for unit in edge.service edge-backup.service edge-backup.timer; do
  relocate "$bundle/systemd/$unit" > "$units/$unit.new"
  chmod 0644 "$units/$unit.new"
  mv -f "$units/$unit.new" "$units/$unit"
done

config_ok=1
"$venv/bin/edge" --version >/dev/null || die "the installed program does not run (above); the node is left stopped"
# check-config checks the secret and key files as serve will: as the service's user.
check=("$venv/bin/edge" check-config --config "$etc/edge.toml")
[ -z "$prefix" ] && check=(runuser -u edge -- "${check[@]}")
if ! "${check[@]}" >/dev/null 2>&1; then
  config_ok=0
  "${check[@]}" >/dev/null || true
  echo "install.sh: $etc/edge.toml has an error (above): fix it, then start the node" >&2
fi

if systemd_up; then
  systemctl daemon-reload
  systemctl enable --quiet edge.service edge-backup.timer
  systemctl start edge-backup.timer
  if [ "$was_running" = 1 ] && [ "$config_ok" = 1 ]; then
    systemctl start edge.service
    say "node restarted: systemctl status edge"
  elif [ "$new_config" = 1 ]; then
    say "enabled, not started: edit the configuration first, then systemctl start edge"
  else
    say "enabled; the node was not running, start it with: systemctl start edge"
  fi
elif [ -z "$prefix" ]; then
  say "systemd is not running here (a container?): units installed but not enabled;" \
    "run the node with: $venv/bin/edge serve --config $etc/edge.toml"
fi

say "governorate-edge $version installed in $venv"
echo "    check the server:  sudo -u edge $venv/bin/edge doctor --config $etc/edge.toml"
echo "    guide:             $venv/share/README.md"

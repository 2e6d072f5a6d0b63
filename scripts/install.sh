#!/usr/bin/env bash
# Install lbd as a systemd service: binaries, unit, example config and a
# dedicated user. Safe to run again: it replaces the binaries and the unit,
# and never overwrites an existing /etc/lbd/lbd.toml.
#
#   make build && sudo scripts/install.sh
#   sudo systemctl enable --now lbd
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}

if [ "$(id -u)" -ne 0 ] && [ -z "$DESTDIR" ]; then
	echo "install.sh: run as root (or set DESTDIR to stage into a directory)" >&2
	exit 1
fi
for b in lbd lbctl; do
	if [ ! -x "$ROOT/bin/$b" ]; then
		echo "install.sh: $ROOT/bin/$b is missing; run 'make build' first" >&2
		exit 1
	fi
done

install -d "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/lbd" "$DESTDIR/etc/systemd/system"
install -m 0755 "$ROOT/bin/lbd" "$ROOT/bin/lbctl" "$DESTDIR$PREFIX/bin/"
sed "s#/usr/local/bin#$PREFIX/bin#g" "$ROOT/configs/systemd/lbd.service" >"$DESTDIR/etc/systemd/system/lbd.service.tmp"
mv "$DESTDIR/etc/systemd/system/lbd.service.tmp" "$DESTDIR/etc/systemd/system/lbd.service"
chmod 0644 "$DESTDIR/etc/systemd/system/lbd.service"
install -m 0644 "$ROOT/configs/lbd.example.toml" "$DESTDIR/etc/lbd/lbd.example.toml"
if [ ! -e "$DESTDIR/etc/lbd/lbd.toml" ]; then
	# A starting point: edit it, then 'lbd check -c /etc/lbd/lbd.toml'.
	install -m 0640 "$ROOT/configs/lbd.example.toml" "$DESTDIR/etc/lbd/lbd.toml"
fi

if [ -z "$DESTDIR" ]; then
	if ! getent group lbd >/dev/null; then
		groupadd --system lbd
	fi
	if ! getent passwd lbd >/dev/null; then
		useradd --system --gid lbd --home-dir /var/lib/lbd --no-create-home \
			--shell /usr/sbin/nologin --comment "lbd load balancer" lbd
	fi
	chgrp lbd /etc/lbd/lbd.toml
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		systemctl daemon-reload
	fi
fi
echo "installed lbd into $DESTDIR$PREFIX/bin; next: edit /etc/lbd/lbd.toml, then: systemctl enable --now lbd"

#!/bin/bash
# Installs Sluice on a Debian 12 machine. Run as root by the Packer template
# (packer/sluice.pkr.hcl) on the build instance, and by packer/test/run in a
# debootstrap chroot. It needs no running systemd and can be run again.
#
# Environment:
#   SLUICE_BUILD_DIR      uploaded files: release/ (the output of dev/release)
#                         and files/ (packer/files). Default /tmp/sluice-build.
#   SLUICE_APT_UPGRADE    yes: apply pending Debian updates first. Default no.
#   SLUICE_IMAGE_CLEANUP  yes: remove the uploads and per-instance state
#                         (machine-id, cloud-init state) so that each instance
#                         launched from the image starts fresh. Default no.
#
# Layout:
#   /usr/local/bin/sluice                       the binary
#   /var/lib/sluice/plugins/*.wasm              bundled plugins (drop-in directory)
#   /usr/local/share/sluice/sluice.toml         configuration template
#   /etc/sluice/sluice.toml                     configuration (root:sluice 0640),
#                                               rendered at boot by sluice-render
#   /etc/sluice/sluice-merge.toml               the metrics merge stage's configuration,
#                                               rendered at boot when SLUICE_METRICS_MERGE=true
#   /etc/sluice/sluice.env                      runtime settings, written at boot
#   /usr/local/lib/sluice/sluice-settings       writes sluice.env from user data
#   /usr/local/lib/sluice/sluice-render         writes sluice.toml from sluice.env
#   /etc/systemd/system/sluice.service          the hardened service
#   /etc/systemd/system/sluice-merge.service    the metrics merge stage (runs only when
#                                               its configuration exists)
#   /etc/systemd/system/sluice-settings.service the boot-time settings oneshot
set -euo pipefail

build_dir=${SLUICE_BUILD_DIR:-/tmp/sluice-build}
release=$build_dir/release
files=$build_dir/files
apt_upgrade=${SLUICE_APT_UPGRADE:-no}
cleanup=${SLUICE_IMAGE_CLEANUP:-no}

say() { printf '==> provision: %s\n' "$*"; }
die() { printf '==> provision: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
for f in "$release/sluice" "$release/sluice.toml" "$release/SHA256SUMS" \
  "$files/sluice.service" "$files/sluice-merge.service" "$files/sluice-settings.service" \
  "$files/sluice-settings" "$files/sluice-render"; do
  [[ -f $f ]] || die "missing $f (did dev/release run, and did the upload work?)"
done
compgen -G "$release/plugins/*.wasm" >/dev/null || die "no plugins in $release/plugins"

# --- Check what was uploaded -----------------------------------------------------
say "checking $release/SHA256SUMS"
(cd "$release" && sha256sum --check --strict --quiet SHA256SUMS) || die "checksum mismatch in $release"

# The binary must be an ELF executable for this machine (arm64 AMI <- arm64 build).
elf_magic=$(head -c 4 "$release/sluice" | od -An -tx1 | tr -d ' \n')
[[ $elf_magic == 7f454c46 ]] || die "$release/sluice is not an ELF executable"
elf_machine=$(od -An -tx1 -j 18 -N 2 "$release/sluice" | tr -d ' \n')
case $(uname -m) in
  x86_64) want=3e00 ;;
  aarch64) want=b700 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac
[[ $elf_machine == "$want" ]] || die "$release/sluice was built for another CPU (ELF machine $elf_machine, this is $(uname -m)): build the release on/for $(uname -m)"

# cloud-init may still be busy (apt, SSH keys) on the first boot of the build
# instance: let it finish before changing packages or cleaning its state.
if command -v cloud-init >/dev/null && [[ -d /run/systemd/system ]]; then
  say "waiting for cloud-init to finish"
  cloud-init status --wait >/dev/null || true
fi

# --- OS updates --------------------------------------------------------------------
if [[ $apt_upgrade == yes ]]; then
  say "applying Debian updates"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade
  # ca-certificates: TLS to brokers and AWS (it brings libssl3, which librdkafka links);
  # curl: IMDSv2 fallback of sluice-settings.
  apt-get -q -y install --no-install-recommends ca-certificates curl
  apt-get -q -y autoremove --purge
  apt-get clean
fi

# The AWS SDK and TLS to brokers and search need the system's trusted roots; without
# them sluice cannot start (a minimal image may lack them).
if [[ ! -s /etc/ssl/certs/ca-certificates.crt ]]; then
  say "installing ca-certificates"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -q -y install --no-install-recommends ca-certificates >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get -q -y install --no-install-recommends ca-certificates >/dev/null; } ||
    die "cannot install ca-certificates (sluice needs trusted root certificates)"
fi

# --- User ----------------------------------------------------------------------------
if ! getent group sluice >/dev/null; then
  say "creating group sluice"
  groupadd --system sluice
fi
if ! getent passwd sluice >/dev/null; then
  say "creating user sluice"
  useradd --system --gid sluice --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "Sluice log pipeline" sluice
fi

# --- Files ---------------------------------------------------------------------------
say "installing /usr/local/bin/sluice"
install -D -o root -g root -m 0755 "$release/sluice" /usr/local/bin/sluice
# Every shared library the binary needs must be on the image.
if command -v ldd >/dev/null && ldd /usr/local/bin/sluice 2>&1 | grep -q 'not found'; then
  ldd /usr/local/bin/sluice >&2 || true
  die "/usr/local/bin/sluice needs libraries that are not installed"
fi

say "installing plugins into /var/lib/sluice/plugins"
install -d -o root -g root -m 0755 /var/lib/sluice /var/lib/sluice/plugins
for wasm in "$release"/plugins/*.wasm; do
  install -o root -g root -m 0644 "$wasm" "/var/lib/sluice/plugins/$(basename "$wasm")"
done

say "installing /etc/sluice"
install -d -o root -g sluice -m 0750 /etc/sluice
install -d -o root -g root -m 0755 /usr/local/share/sluice
install -o root -g root -m 0644 "$release/sluice.toml" /usr/local/share/sluice/sluice.toml
if [[ ! -e /etc/sluice/sluice.env ]]; then
  # Replaced at every boot by sluice-settings.service.
  printf '# Written at boot by sluice-settings.service from the user data (docs/ami.md).\n' \
    >/etc/sluice/sluice.env
fi
chown root:sluice /etc/sluice/sluice.env
chmod 0640 /etc/sluice/sluice.env

install -d -o root -g root -m 0755 /usr/local/lib/sluice
install -o root -g root -m 0755 "$files/sluice-settings" /usr/local/lib/sluice/sluice-settings
install -o root -g root -m 0755 "$files/sluice-render" /usr/local/lib/sluice/sluice-render
if [[ -f $release/VERSION ]]; then
  install -o root -g root -m 0644 "$release/VERSION" /usr/local/lib/sluice/VERSION
fi

# Rendered again at every boot from that boot's settings; until then, the template's sinks.
say "rendering /etc/sluice/sluice.toml"
/usr/local/lib/sluice/sluice-render

say "installing systemd units"
install -o root -g root -m 0644 "$files/sluice.service" /etc/systemd/system/sluice.service
# The merge stage: enabled everywhere, started only where sluice-merge.toml was rendered.
install -o root -g root -m 0644 "$files/sluice-merge.service" /etc/systemd/system/sluice-merge.service
install -o root -g root -m 0644 "$files/sluice-settings.service" \
  /etc/systemd/system/sluice-settings.service
# `systemctl enable` works without a running systemd (chroot, image build).
systemctl enable sluice-settings.service sluice.service sluice-merge.service
if [[ -d /run/systemd/system ]] && ! systemd-detect-virt --quiet --chroot 2>/dev/null; then
  systemctl daemon-reload
fi

# --- Image cleanup -------------------------------------------------------------------
if [[ $cleanup == yes ]]; then
  say "removing per-instance state"
  # A fresh machine-id on each instance (journald, DHCP client identifiers).
  truncate -s 0 /etc/machine-id
  if [[ -e /var/lib/dbus/machine-id && ! -L /var/lib/dbus/machine-id ]]; then
    rm -f /var/lib/dbus/machine-id
  fi
  # Runtime settings of the build instance must not leak into the image.
  printf '# Written at boot by sluice-settings.service from the user data (docs/ami.md).\n' \
    >/etc/sluice/sluice.env
  /usr/local/lib/sluice/sluice-render
  if command -v cloud-init >/dev/null; then
    cloud-init clean --logs || true
  fi
  rm -rf -- "$build_dir"
fi

say "done: $(/usr/local/bin/sluice --version 2>/dev/null || echo sluice) installed"

#!/bin/sh
# meson install script (units/meson.build): what a plain copy cannot do.
#
#  1. Give the installed dmtcp_restart the file capability
#     cap_checkpoint_restore, so that it can restore process ids without a
#     new pid namespace; it keeps only that capability and the restored
#     processes never get it (dmtcp_restart(1), CAPABILITIES). Not possible in
#     a DESTDIR (package) build, as non-root, without setcap, or on a
#     filesystem without extended attributes: then say so, and what to run.
#  2. Refresh the journal catalog when the catalog went where journalctl
#     reads it (/usr/lib/systemd/catalog), else say how to link it there.
#  3. The same note for the polkit action.
#
# Arguments: BINDIR CATALOGDIR POLKITDIR, relative to the prefix. Never fails
# the install: each step reports and goes on.
set -u
bindir=$1 catalogdir=$2 polkitdir=$3
prefix=${MESON_INSTALL_PREFIX:?run by meson install}
dest_prefix=${MESON_INSTALL_DESTDIR_PREFIX:-$prefix}
restart=$dest_prefix/$bindir/dmtcp_restart

# meson 1.0 shows an install script's output only when it fails: write to
# meson's own standard output as well, unless that is ours already.
out=/dev/stdout
if [ -e "/proc/$PPID/fd/1" ] && [ "$(stat -L -c %d:%i "/proc/$PPID/fd/1" 2>/dev/null)" != "$(stat -L -c %d:%i /proc/self/fd/1 2>/dev/null)" ]; then
    out=/proc/$PPID/fd/1
fi
say() { echo "dmtcp: $*"; [ "$out" = /dev/stdout ] || echo "dmtcp: $*" >>"$out" 2>/dev/null || true; }
note() { [ -n "${MESON_INSTALL_QUIET:-}" ] || say "$@"; }

if [ -n "${DESTDIR:-}" ]; then
    say "not setting cap_checkpoint_restore on dmtcp_restart: DESTDIR install; the package should run 'setcap cap_checkpoint_restore+ep $prefix/$bindir/dmtcp_restart' after installing it"
elif ! command -v setcap >/dev/null 2>&1; then
    say "not setting cap_checkpoint_restore on $restart: setcap is missing (Debian: libcap2-bin); dmtcp_restart restores process ids in a new pid namespace instead"
elif [ "$(id -u)" != 0 ]; then
    say "not setting cap_checkpoint_restore on $restart: only root can; as root run 'setcap cap_checkpoint_restore+ep $restart' (optional: without it, process ids are restored in a new pid namespace)"
elif err=$(setcap cap_checkpoint_restore+ep "$restart" 2>&1); then
    note "set the file capability cap_checkpoint_restore+ep on $restart"
else
    say "cannot set cap_checkpoint_restore on $restart ($err; a filesystem without extended attributes, or a kernel older than 5.9?); dmtcp_restart restores process ids in a new pid namespace instead"
fi

catalog=$dest_prefix/$catalogdir/dmtcp.catalog
case "$prefix/$catalogdir" in
    /usr/lib/systemd/catalog|/lib/systemd/catalog)
        if [ -z "${DESTDIR:-}" ] && command -v journalctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            journalctl --update-catalog && note "updated the journal catalog (journalctl -x explains dmtcp's entries)"
        else
            say "run 'journalctl --update-catalog' as root after installing, so journalctl -x explains dmtcp's entries"
        fi ;;
    *)
        say "the journal reads catalogs only from /usr/lib/systemd/catalog: to use $catalog, as root link it there and run 'journalctl --update-catalog'" ;;
esac

case "$prefix/$polkitdir" in
    /usr/share/polkit-1/actions) ;;
    *) say "polkit reads actions only from /usr/share/polkit-1/actions: to let polkit authorize restarting other users' images (org.dmtcp.restart-foreign-image), as root link $dest_prefix/$polkitdir/org.dmtcp.policy there" ;;
esac
exit 0

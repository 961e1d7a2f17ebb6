#!/usr/bin/env bash
# Install the Debian packages named in a list file that are not installed yet.
#
# usage: scripts/ensure-debian-packages.sh LIST_FILE
#
# LIST_FILE names packages separated by whitespace, usually one a line; `#` starts a comment.
# Prints nothing when every package is installed. Otherwise runs `apt-get update` once and
# `apt-get install -y --no-install-recommends` for the missing ones, as root or through
# passwordless sudo. Services are not started: a temporary policy-rc.d (exit 101) tells
# invoke-rc.d / deb-systemd-invoke to leave them stopped, as the tests start their own servers.
#
# When the packages cannot be installed (not Debian, no root or sudo, apt-get failed) it names
# the missing packages and exits 1 if CI=true; elsewhere it warns and exits 0, and the tests
# that need them skip with a reason.
set -euo pipefail

me=$(basename "$0")
list=${1:?"usage: $me LIST_FILE"}
[[ -r $list ]] || { echo "$me: cannot read package list '$list'" >&2; exit 2; }

mapfile -t wanted < <(awk '{ sub(/#.*/, ""); for (i = 1; i <= NF; i++) print $i }' "$list")
((${#wanted[@]})) || exit 0

missing=()
for pkg in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

give_up() {  # $1: why
    echo "$me: missing Debian packages: ${missing[*]} ($1)" >&2
    if [[ ${CI:-} == true ]]; then
        echo "$me: CI=true, so this is an error; install them and run again" >&2
        exit 1
    fi
    echo "$me: warning: tests that need them will be skipped;" \
        "install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 0
}

command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    give_up "apt-get/dpkg-query not found; is this Debian or Ubuntu?"

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    give_up "not root and no passwordless sudo"
fi

policy=/usr/sbin/policy-rc.d
remove_policy=false
if [[ ! -e $policy ]]; then
    "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    remove_policy=true
fi
cleanup() { if $remove_policy; then "${as_root[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

echo "$me: installing ${missing[*]}"
apt_env=(env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1)
"${as_root[@]}" "${apt_env[@]}" apt-get update -qq || give_up "apt-get update failed"
"${as_root[@]}" "${apt_env[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    give_up "apt-get install failed"

#!/bin/bash
# Run as root inside `unshare --net` only: a fresh network namespace with stand-ins for IMDS
# and the ECS agent's credential endpoint, the firewall rules from "$1" applied (twice:
# they must be idempotent), then one line per probe: "<uid> <address> open|blocked".
set -euo pipefail
RULES=$1
PYTHON=$2
IMDS=169.254.169.254
AGENT=169.254.170.2
ip link set lo up
if ip link add dummy0 type dummy 2>/dev/null; then DEV=dummy0; ip link set dummy0 up; else DEV=lo; fi
ip addr add "$IMDS/32" dev "$DEV"
ip addr add "$AGENT/32" dev "$DEV"
SERVERS=()
trap 'kill "${SERVERS[@]}" 2>/dev/null || true' EXIT
for address in "$IMDS" "$AGENT"; do
  "$PYTHON" -m http.server --bind "$address" 80 >/dev/null 2>&1 &
  SERVERS+=($!)
done
connect() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/80" 2>/dev/null; }
for address in "$IMDS" "$AGENT"; do
  for _ in $(seq 50); do connect "$address" && break; sleep 0.1; done
done
bash "$RULES"
bash "$RULES"
echo "rules $(iptables -w -S OUTPUT | grep -c -- "-d $IMDS/32" || true)"
for address in "$IMDS" "$AGENT"; do
  if connect "$address"; then echo "0 $address open"; else echo "0 $address blocked"; fi
  if setpriv --reuid 1000 --regid 1000 --clear-groups bash -c \
    "timeout 3 bash -c 'exec 3<>/dev/tcp/$address/80'" 2>/dev/null; then
    echo "1000 $address open"
  else
    echo "1000 $address blocked"
  fi
done

#!/bin/bash
# Mount the instance's local NVMe disks at /scratch (RAID0 when there are several),
# or make /scratch on the root volume when the instance has none. The job definitions
# bind /scratch into the container, where the worker downloads and sorts.
set -euo pipefail
SCRATCH=/scratch
mkdir -p "$SCRATCH"
if mountpoint -q "$SCRATCH"; then
  exit 0
fi
mapfile -t DEVICES < <(lsblk --nodeps --noheadings --paths --output NAME,MODEL \
  | awk '/Amazon EC2 NVMe Instance Storage/ {print $1}')
if [ "${#DEVICES[@]}" -eq 0 ]; then
  echo "spikebatch: no NVMe instance storage; $SCRATCH stays on the root volume"
elif [ "${#DEVICES[@]}" -eq 1 ]; then
  mkfs.xfs -f "${DEVICES[0]}"
  mount -o noatime "${DEVICES[0]}" "$SCRATCH"
else
  command -v mdadm >/dev/null || dnf install -y mdadm
  mdadm --create /dev/md0 --run --level=0 --raid-devices="${#DEVICES[@]}" "${DEVICES[@]}"
  mkfs.xfs -f /dev/md0
  mount -o noatime /dev/md0 "$SCRATCH"
fi
chmod 1777 "$SCRATCH"
echo "spikebatch: $SCRATCH ready: $(df -h "$SCRATCH" | tail -1)"

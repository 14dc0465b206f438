#!/usr/bin/env bash
# Runs kiln's tests. Installs the Debian packages the tests need when they are missing (the real
# registry, skopeo, umoci, busybox-static, ...), then runs the workspace tests.
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real components the integration tests start or call (../shared/TESTING.md).
packages=(docker-registry skopeo umoci busybox-static apache2-utils uidmap openssl podman runc debootstrap git openssh-client openssh-server bzip2 xz-utils python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --workspace --all-targets
if [ $# -eq 0 ]; then
  # --show-output: the conformance table ("N passed, N failed, N skipped") and every
  # "skipped: <reason>" line are printed even when the tests pass.
  cargo test --workspace -- --show-output
else
  cargo test --workspace "$@"
fi

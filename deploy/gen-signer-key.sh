#!/usr/bin/env bash
# Makes the receipt log's Ed25519 signing key once, offline, for deployments where more
# than one receipt-signer must sign with the same key (Kubernetes: both replicas).
#
#   deploy/gen-signer-key.sh OUT_DIR ORIGIN
#   deploy/gen-signer-key.sh /secure/place/signer hsync.example.com/receipts
#
# Writes OUT_DIR/signer.key (PKCS#8 v2, mode 0600), signer.vkey and verifier.vkeys (the
# verifier key to give to auditors). ORIGIN must be the HSYNC_LOG_ORIGIN the signers run
# with. It runs `receipt-signer` itself, which makes a key when there is none and then
# fails to reach NATS on purpose (nothing else happens); the binary comes from PATH, from
# HSYNC_BIN_DIR, or, with HSYNC_IMAGE set, from that image through docker.
set -euo pipefail

if [ $# -ne 2 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
out="$1"
origin="$2"
if [ -e "$out/signer.key" ]; then
  echo "gen-signer-key.sh: $out/signer.key exists; not replacing a signing key" >&2
  exit 1
fi
umask 077
mkdir -p "$out"
out="$(cd "$out" && pwd)"

envs=(HSYNC_SIGNER_DIR=/key HSYNC_LOG_ORIGIN="$origin" NATS_URL=nats://127.0.0.1:1
      HSYNC_CONNECT_TIMEOUT_S=1 HSYNC_METRICS_ADDR=off OTEL_SDK_DISABLED=true RUST_BACKTRACE=0)
if [ -n "${HSYNC_IMAGE:-}" ]; then
  docker_env=()
  for e in "${envs[@]}"; do docker_env+=(-e "$e"); done
  docker run --rm --network none --user "$(id -u):$(id -g)" -v "$out:/key" "${docker_env[@]}" \
    "$HSYNC_IMAGE" receipt-signer >"$out/.gen.log" 2>&1 || true
else
  bin="$(command -v receipt-signer || true)"
  [ -n "$bin" ] || bin="${HSYNC_BIN_DIR:-$HOME/.cache/hsync/target/release}/receipt-signer"
  [ -x "$bin" ] || { echo "gen-signer-key.sh: no receipt-signer binary (PATH, HSYNC_BIN_DIR) and no HSYNC_IMAGE" >&2; exit 1; }
  env "${envs[@]/#HSYNC_SIGNER_DIR=\/key/HSYNC_SIGNER_DIR=$out}" "$bin" >"$out/.gen.log" 2>&1 || true
fi
if [ ! -s "$out/signer.key" ]; then
  cat "$out/.gen.log" >&2
  echo "gen-signer-key.sh: no key was written" >&2
  exit 1
fi
rm -f "$out/.gen.log"
echo "gen-signer-key.sh: signing key $out/signer.key (keep it secret, back it up offline)"
echo "verifier key: $(cat "$out/signer.vkey")"

#!/usr/bin/env bash
# Writes the NATS user passwords to an env file (default deploy/.env, mode 0600), one
# random password per user: letters and digits, starting with a letter, because
# nats-server parses an environment value as a config value (a leading digit would make
# it a number). An existing file is left alone.
#
#   deploy/gen-secrets.sh [FILE]
#
# docker compose reads deploy/.env by itself (it sits next to compose.yaml); for
# Kubernetes: kubectl -n hsync create secret generic hsync-nats-users --from-env-file=deploy/.env
# Never commit the file (deploy/.gitignore lists it).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
file="${1:-$here/.env}"
if [ -e "$file" ]; then
  echo "gen-secrets.sh: $file exists; delete it first to make new passwords" >&2
  exit 1
fi

password() {
  local p
  p="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 30 || true)"
  printf 'hs%s' "$p"
}

umask 077
{
  echo "# NATS user passwords for HyperSync (deploy/nats/accounts.conf). Secret: do not commit."
  for user in CLIENT ADMIN RUNNER POLICY_EVALUATOR GEOMETRY_CACHE RECEIPT_SIGNER INDEXER; do
    echo "HSYNC_${user}_PASSWORD=$(password)"
  done
} >"$file"
echo "gen-secrets.sh: wrote $file"

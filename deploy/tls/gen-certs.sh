#!/usr/bin/env bash
# Generates a local CA and one NATS server certificate (EC P-256), for the client port
# and the cluster routes of all three nodes.
#
#   deploy/tls/gen-certs.sh [OUT_DIR]        # default: deploy/tls/certs
#
# Writes OUT_DIR/ca.pem, ca-key.pem, server.pem, server-key.pem. The server certificate
# is valid for serverAuth and clientAuth (the routes between nodes verify each other with
# it) and names:
#   nats-1 nats-2 nats-3 localhost 127.0.0.1                  (compose, loopback)
#   nats nats.hsync nats.hsync.svc nats.hsync.svc.cluster.local
#   *.nats-headless.hsync.svc.cluster.local                   (Kubernetes, namespace hsync)
# Add names with EXTRA_SANS, e.g. EXTRA_SANS="DNS:nats.example.com,IP:10.0.0.5".
# Validity: CA_DAYS (default 3650), SERVER_DAYS (default 825).
#
# An existing CA in OUT_DIR is reused (so a new server certificate is trusted by clients
# that already have ca.pem); delete OUT_DIR to start over. Keep ca-key.pem off the NATS
# nodes: they need server.pem, server-key.pem and ca.pem only.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/certs}"
ca_days="${CA_DAYS:-3650}"
server_days="${SERVER_DAYS:-825}"
sans="DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1"
sans="$sans,DNS:nats,DNS:nats.hsync,DNS:nats.hsync.svc,DNS:nats.hsync.svc.cluster.local"
sans="$sans,DNS:*.nats-headless.hsync.svc.cluster.local"
if [ -n "${EXTRA_SANS:-}" ]; then
  sans="$sans,$EXTRA_SANS"
fi

command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$out"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -s "$out/ca.pem" ] || [ ! -s "$out/ca-key.pem" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca-key.pem"
  cat > "$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = HyperSync NATS CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  openssl req -x509 -new -key "$out/ca-key.pem" -sha256 -days "$ca_days" \
    -config "$work/ca.cnf" -out "$out/ca.pem"
  echo "gen-certs.sh: new CA in $out/ca.pem"
else
  echo "gen-certs.sh: reusing the CA in $out/ca.pem"
fi

openssl ecparam -name prime256v1 -genkey -noout -out "$work/server-key.ec.pem"
# PKCS#8, the form every TLS stack reads.
openssl pkcs8 -topk8 -nocrypt -in "$work/server-key.ec.pem" -out "$out/server-key.pem"
cat > "$work/server.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = nats
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
openssl req -new -key "$out/server-key.pem" -config "$work/server.cnf" -out "$work/server.csr"
openssl x509 -req -in "$work/server.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
  -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$server_days" \
  -extfile "$work/server.cnf" -extensions v3_server -out "$out/server.pem"
# Public parts readable by the (non-root) nats user in containers; keys stay 0600.
chmod 0644 "$out/ca.pem" "$out/server.pem"
chmod 0600 "$out/ca-key.pem" "$out/server-key.pem"
openssl verify -CAfile "$out/ca.pem" "$out/server.pem" >/dev/null
echo "gen-certs.sh: server certificate $out/server.pem for $sans"

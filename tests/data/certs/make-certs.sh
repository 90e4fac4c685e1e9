#!/usr/bin/env bash
# Makes the test CA and the certificates the integration tests and the sandbox use.
# Test-only keys: never trust this CA anywhere else. Valid for 100 years so tests do not expire.
# Run from this folder: ./make-certs.sh
set -euo pipefail
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=sparkrtc-gateway test CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -out "$1.pem" \
    -extfile <(printf '%s\n' "$3")
  rm "$1.csr"
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
issue client "/CN=test-client" "subjectAltName=DNS:test-client.internal
extendedKeyUsage=clientAuth"
# A workload identified by its SPIFFE id (URI SAN) only, as a mesh issues them.
issue spiffe-client "/CN=spiffe-client" "subjectAltName=URI:spiffe://example.org/ns/billing/sa/api
extendedKeyUsage=clientAuth"
rm -f ca.srl

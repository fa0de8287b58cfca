#!/usr/bin/env bash
# Makes a test CA (ca.pem) and a server certificate for localhost (+ the names given),
# signed by it (server.pem, server.key), in DIR. Plays the edge CA and edgeHub's certificate.
set -euo pipefail
dir=$1; shift
mkdir -p "$dir"; cd "$dir"
san="DNS:localhost"
for n in "$@"; do san="$san,DNS:$n"; done
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=azureiotsecurity test edge CA" \
  -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san" > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out server.pem 2>/dev/null
cat server.pem ca.pem > server-chain.pem

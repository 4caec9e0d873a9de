#!/usr/bin/env bash
# Regenerates the compiled-in certificate and key (`just certs`): a
# self-signed P-256 certificate for the fixed server name "lanspread",
# valid for 100 years. Rebuild the binaries afterwards.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -new -x509 -nodes \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout key.pem -out cert.pem -days 36500 \
    -subj "/CN=lanspread" -addext "subjectAltName=DNS:lanspread" 2> /dev/null
chmod 644 cert.pem key.pem
openssl x509 -in cert.pem -noout -subject -enddate

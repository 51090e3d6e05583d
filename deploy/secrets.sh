#!/bin/sh
# Makes the files the kustomize base turns into Secrets, in deploy/base/secrets/ (git ignores
# them): the JWT signing key pair (Ed25519), the PostgreSQL password and the object store's
# keys. Run it once before the first `kubectl apply -k`; it never replaces a file that is
# there (a new DB password would not match the initialized database, a new JWT key would
# sign everybody out). Needs openssl 1.1.1 or later.
set -eu
dir="${1:-$(dirname "$0")/base/secrets}"
mkdir -p "$dir"
umask 077
once() {  # once FILE COMMAND...: run COMMAND into FILE unless FILE exists
  file="$dir/$1"
  shift
  if [ -s "$file" ]; then
    echo "kept    $file"
  else
    "$@" >"$file.tmp" && mv "$file.tmp" "$file" && echo "created $file"
  fi
}
once jwt_ed25519.pem openssl genpkey -algorithm ed25519
once jwt_ed25519.pub.pem openssl pkey -in "$dir/jwt_ed25519.pem" -pubout
once db-password sh -c 'openssl rand -hex 24 | tr -d "\n"'
once s3-access-key sh -c 'printf visionmesh-%s "$(openssl rand -hex 6)"'
once s3-secret-key sh -c 'openssl rand -hex 32 | tr -d "\n"'

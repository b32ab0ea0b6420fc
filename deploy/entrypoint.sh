#!/bin/sh
# Entry point of the image: turns secrets mounted as files into the environment variables the
# services read, then runs the command (`python -m <service>`).
#
# The services' settings read secrets from the environment; the containers get them as files
# (compose secrets, Kubernetes secret volumes), so no secret value is written in docker-compose.yml,
# in a pod spec or in `docker inspect`. For each NAME below, NAME_FILE is the path of its file.
set -eu

for name in ORCH_CREDENTIAL_KEY ORCH_CREDENTIAL_KEYS GATEWAY_ADMIN_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    path=$(printenv "${name}_FILE" || true)
    [ -n "$path" ] || continue
    if printenv "$name" >/dev/null; then
        echo "entrypoint: set either $name or ${name}_FILE, not both" >&2
        exit 64
    fi
    if [ ! -r "$path" ]; then
        echo "entrypoint: ${name}_FILE=$path is not a readable file" >&2
        exit 66
    fi
    # $(cat) drops the trailing newline an editor or `echo` leaves at the end of the file.
    value=$(cat "$path")
    export "$name=$value"
    unset "${name}_FILE"
done

exec "$@"

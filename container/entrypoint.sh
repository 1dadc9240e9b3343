#!/bin/sh
# The image's entrypoint: start what the first argument names, with `exec`,
# so the server replaces this shell as PID 1 and receives SIGTERM from the
# kubelet directly (graceful drain). See docs/deployment.md.
#
#   function  the function target $FUNCTION_TARGET (functions/<target>.py),
#             its functions-framework app served by `whatschat serve-function`
#             (granian), WORKERS processes of THREADS threads (set
#             explicitly; see the Containerfile)
#   gateway   the WebSocket gateway (`whatschat gateway`)
#   migrate   apply pending database migrations (`whatschat migrate`)
#   anything else is run as given (debugging: `sh`, `python`)
set -eu

# OpenFaaS mounts each secret as a file, but whatschat reads settings from
# the environment only (whatschat/config.py): export each one, named after
# the file (whatschat-database-url -> DATABASE_URL).
secrets_dir="${OPENFAAS_SECRETS_DIR:-/var/openfaas/secrets}"
if [ -d "$secrets_dir" ]; then
    for file in "$secrets_dir"/whatschat-*; do
        [ -f "$file" ] || continue
        name=$(basename "$file" | sed 's/^whatschat-//' | tr 'a-z-' 'A-Z_')
        value=$(cat "$file")
        export "$name=$value"
    done
fi

command="${1:-function}"
case "$command" in
    function)
        target="${FUNCTION_TARGET:?set FUNCTION_TARGET to a function target (functions/<target>.py)}"
        case "$target" in
            *[!a-z0-9_]* | "")
                echo "whatschat-entrypoint: invalid FUNCTION_TARGET '$target'" >&2
                exit 64
                ;;
        esac
        source_file="${FUNCTIONS_DIR:-/app/functions}/$target.py"
        if [ ! -f "$source_file" ]; then
            echo "whatschat-entrypoint: no function module $source_file" >&2
            exit 66
        fi
        : "${WORKERS:?set WORKERS (server processes)}"
        : "${THREADS:?set THREADS (server threads per process)}"
        export WORKERS THREADS
        exec whatschat serve-function \
            --target="$target" \
            --source="$source_file" \
            --signature-type="${FUNCTION_SIGNATURE_TYPE:-http}" \
            --port="${PORT:-8080}"
        ;;
    gateway)
        exec whatschat gateway
        ;;
    migrate)
        exec whatschat migrate
        ;;
    *)
        exec "$@"
        ;;
esac

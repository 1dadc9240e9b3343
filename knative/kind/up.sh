#!/usr/bin/env bash
# The kind quickstart: a local Kubernetes cluster running WhatsChat exactly
# as production does (Knative Serving + Kourier, Knative Eventing,
# CloudNativePG with the Barman Cloud plugin, Envoy Gateway), then a smoke
# test: register, log in, send, receive over the gateway.
#
#   knative/kind/up.sh            create or update the cluster, deploy, smoke test
#   knative/kind/up.sh --down     delete the cluster
#
# Idempotent: every step checks or applies declaratively, secrets are made
# once and kept, a re-run rebuilds and reloads the image and rolls it out.
# Needs: kind, kubectl, docker or podman, and the project's venv (make dev
# creates it). Versions below are pinned; override them in the environment.
# See docs/deployment.md, "kind quickstart".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${WHATSCHAT_KIND_CLUSTER:-whatschat}"
IMAGE="dev.local/whatschat:dev"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
KNATIVE_VERSION="${KNATIVE_VERSION:-1.20.0}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-1.18.2}"
CNPG_VERSION="${CNPG_VERSION:-1.27.0}"
BARMAN_PLUGIN_VERSION="${BARMAN_PLUGIN_VERSION:-0.6.0}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-1.5.0}"
WAIT="${WAIT:-600s}"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed"
}

container_engine() {
    if command -v docker >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null 2>&1; then
        echo podman
    else
        die "neither docker nor podman is installed"
    fi
}

apply_url() {
    kubectl apply --server-side --force-conflicts -f "$1" >/dev/null
}

wait_deployments() {
    kubectl wait deployment --all --namespace "$1" --for=condition=Available --timeout="$WAIT"
}

create_cluster() {
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        say "kind cluster '$CLUSTER' exists"
    else
        say "creating kind cluster '$CLUSTER'"
        kind create cluster --name "$CLUSTER" --config "$ROOT/knative/kind/cluster.yaml"
    fi
    kubectl config use-context "kind-$CLUSTER" >/dev/null
}

install_platform() {
    local knative="https://github.com/knative"
    say "cert-manager $CERT_MANAGER_VERSION (needed by the Barman Cloud plugin)"
    apply_url "https://github.com/cert-manager/cert-manager/releases/download/v$CERT_MANAGER_VERSION/cert-manager.yaml"
    wait_deployments cert-manager

    say "Knative Serving $KNATIVE_VERSION with Kourier"
    apply_url "$knative/serving/releases/download/knative-v$KNATIVE_VERSION/serving-crds.yaml"
    apply_url "$knative/serving/releases/download/knative-v$KNATIVE_VERSION/serving-core.yaml"
    apply_url "$knative/net-kourier/releases/download/knative-v$KNATIVE_VERSION/kourier.yaml"
    kubectl patch configmap/config-network --namespace knative-serving --type merge \
        --patch '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
    wait_deployments knative-serving
    wait_deployments kourier-system

    say "Knative Eventing $KNATIVE_VERSION (PingSource)"
    apply_url "$knative/eventing/releases/download/knative-v$KNATIVE_VERSION/eventing-crds.yaml"
    apply_url "$knative/eventing/releases/download/knative-v$KNATIVE_VERSION/eventing-core.yaml"
    wait_deployments knative-eventing

    say "CloudNativePG $CNPG_VERSION and the Barman Cloud plugin $BARMAN_PLUGIN_VERSION"
    local minor="${CNPG_VERSION%.*}"
    apply_url "https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-$minor/releases/cnpg-$CNPG_VERSION.yaml"
    wait_deployments cnpg-system
    apply_url "https://github.com/cloudnative-pg/plugin-barman-cloud/releases/download/v$BARMAN_PLUGIN_VERSION/manifest.yaml"
    wait_deployments cnpg-system

    say "Envoy Gateway $ENVOY_GATEWAY_VERSION (Gateway API)"
    apply_url "https://github.com/envoyproxy/gateway/releases/download/v$ENVOY_GATEWAY_VERSION/install.yaml"
    wait_deployments envoy-gateway-system
}

build_image() {
    local engine archive
    engine="$(container_engine)"
    say "building $IMAGE with $engine"
    "$engine" build --tag "$IMAGE" --file "$ROOT/Containerfile" "$ROOT"
    say "loading $IMAGE into the kind nodes"
    if [ "$engine" = docker ]; then
        kind load docker-image "$IMAGE" --name "$CLUSTER"
    else
        archive="$(mktemp)"
        podman save --output "$archive" "$IMAGE"
        kind load image-archive "$archive" --name "$CLUSTER"
        rm -f "$archive"
    fi
}

secret_exists() {
    kubectl get secret "$1" --namespace whatschat >/dev/null 2>&1
}

random_password() {
    "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))'
}

create_secrets() {
    say "secrets (made once, kept across runs)"
    kubectl apply -f "$ROOT/knative/base/namespace.yaml" >/dev/null
    if ! secret_exists whatschat-token-signing; then
        local keys
        keys="$(mktemp -d)"
        "$PYTHON" - "$keys" <<'PY'
import json, pathlib, sys
from whatschat import tokens
folder = pathlib.Path(sys.argv[1])
pair = tokens.generate_key_pair()
(folder / "kid").write_text(pair.key_id)
(folder / "private").write_text(pair.private_pem)
(folder / "verify").write_text(json.dumps({pair.key_id: pair.public_pem}))
PY
        kubectl create secret generic whatschat-token-signing --namespace whatschat \
            --from-file=TOKEN_SIGNING_KEY_ID="$keys/kid" \
            --from-file=TOKEN_SIGNING_KEY="$keys/private"
        kubectl create secret generic whatschat-token-verify --namespace whatschat \
            --from-file=TOKEN_VERIFY_KEYS="$keys/verify"
        rm -rf "$keys"
    fi
    if ! secret_exists whatschat-db-app; then
        kubectl create secret generic whatschat-db-app --namespace whatschat \
            --type=kubernetes.io/basic-auth \
            --from-literal=username=whatschat --from-literal=password="$(random_password)"
    fi
    if ! secret_exists whatschat-redis; then
        kubectl create secret generic whatschat-redis --namespace whatschat \
            --from-literal=password="$(random_password)"
    fi
    # LocalStack accepts any credentials; these only have to be consistent.
    if ! secret_exists whatschat-s3; then
        kubectl create secret generic whatschat-s3 --namespace whatschat \
            --from-literal=S3_ACCESS_KEY_ID=local --from-literal=S3_SECRET_ACCESS_KEY=local-secret
    fi
    if ! secret_exists whatschat-backup-s3; then
        kubectl create secret generic whatschat-backup-s3 --namespace whatschat \
            --from-literal=ACCESS_KEY_ID=local --from-literal=ACCESS_SECRET_KEY=local-secret
    fi
}

deploy() {
    say "applying knative/overlays/kind"
    # A Job's template is immutable: the finished one goes, the apply makes
    # a new one that migrates with the image just loaded.
    kubectl delete job whatschat-migrate --namespace whatschat --ignore-not-found
    kubectl apply -k "$ROOT/knative/overlays/kind"
    # Same tag, new image: restart what does not roll by itself.
    kubectl rollout restart deployment/whatschat-gateway --namespace whatschat
    for service in $(kubectl get ksvc --namespace whatschat -o name); do
        kubectl patch "$service" --namespace whatschat --type merge --patch \
            "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"whatschat.dev/rollout\":\"$(date +%s)\"}}}}}" \
            >/dev/null
    done

    say "waiting for PostgreSQL, Redis, migrations, functions and the gateway"
    kubectl wait cluster.postgresql.cnpg.io/whatschat-db --namespace whatschat \
        --for=condition=Ready --timeout="$WAIT"
    kubectl rollout status statefulset/whatschat-redis --namespace whatschat --timeout="$WAIT"
    kubectl wait job/whatschat-migrate --namespace whatschat --for=condition=Complete --timeout="$WAIT"
    kubectl wait ksvc --all --namespace whatschat --for=condition=Ready --timeout="$WAIT"
    kubectl rollout status deployment/whatschat-gateway --namespace whatschat --timeout="$WAIT"
    kubectl wait gateway/whatschat --namespace whatschat --for=condition=Programmed --timeout="$WAIT"
}

smoke_test() {
    say "smoke test: register, log in, send, receive over the gateway"
    "$PYTHON" "$ROOT/knative/kind/smoke.py" \
        --api http://127.0.0.1:8080 --socket ws://127.0.0.1:8081/v1/socket
}

main() {
    need kind
    need kubectl
    [ -x "$PYTHON" ] || die "no Python at $PYTHON: run 'make dev' once (it creates .venv)"
    if [ "${1:-}" = "--down" ]; then
        kind delete cluster --name "$CLUSTER"
        return
    fi
    create_cluster
    install_platform
    build_image
    create_secrets
    deploy
    smoke_test
    say "WhatsChat runs on kind: API http://127.0.0.1:8080, WebSocket ws://127.0.0.1:8081/v1/socket"
}

main "$@"

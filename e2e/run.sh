#!/usr/bin/env bash
# End-to-end suite on a kind cluster: build the image, load it, install the chart, run e2e/scenarios.rs.
# Needs docker, kind, helm, kubectl and cargo. KEEP_CLUSTER=1 leaves the cluster for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-workerpool-e2e}"
IMAGE="workerpool-operator:e2e"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
cleanup() {
  if [ "${KEEP_CLUSTER:-}" != "1" ]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
# Images the scenarios use, pulled once so boot times are not download times.
for image in busybox:1.36 python:3.12-alpine; do
  docker pull -q "$image" >/dev/null && kind load docker-image "$image" --name "$CLUSTER"
done

kubectl config use-context "kind-$CLUSTER"
helm upgrade --install workerpool-operator charts/workerpool-operator \
  --namespace workerpool-system --create-namespace \
  --set image.repository=workerpool-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set logging.level=debug --wait --timeout 3m

cargo test --locked --test e2e -- --ignored --test-threads=2 --nocapture

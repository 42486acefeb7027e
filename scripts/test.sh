#!/usr/bin/env bash
# Runs inferd's whole test suite. Installs the independent references the tests compare against when
# they are missing: BART, the openssl CLI, Orthanc (a real PACS) with its DICOMweb plugin, dcmtk, dicom3tools and the ISMRMRD
# tools (Debian packages); PyTorch, PyTorch Geometric, safetensors, numpy, scipy, pydicom, h5py, grpcio with health checking and
# reflection, NVIDIA's tritonclient, FINUFFT and the OpenTelemetry protocol definitions (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bart >/dev/null 2>&1 || need_apt+=(bart)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v Orthanc >/dev/null 2>&1 || need_apt+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v ismrmrd_generate_cartesian_shepp_logan >/dev/null 2>&1 || need_apt+=(ismrmrd-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${INFERD_PYTHON:-python3}
# tritonclient pins protobuf below 7, so health checking and reflection come from a release whose
# generated code runs on protobuf 6.
if ! "$PY" -c "import torch, torch_geometric, safetensors, numpy, scipy, pydicom, h5py, grpc, tritonclient.grpc, finufft, ismrmrd.serialization
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2" >/dev/null 2>&1; then
  echo "installing torch, torch_geometric, safetensors, numpy, scipy, pydicom, h5py, grpcio (+ health checking, reflection), tritonclient, finufft, ismrmrd, opentelemetry-proto (PyPI)"
  "$PY" -m pip install -q --disable-pip-version-check torch torch_geometric safetensors numpy scipy pydicom h5py grpcio \
    "grpcio-health-checking<1.76" "grpcio-reflection<1.76" "tritonclient[grpc]" finufft ismrmrd opentelemetry-proto
fi

# A persistent target directory outside the checkout makes repeated runs on one machine fast.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/inferd-target}
# ...whose superseded build outputs are removed when its disk runs low.
bash scripts/prune-target.sh "$CARGO_TARGET_DIR"
cargo test --all-targets "$@"

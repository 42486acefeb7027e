# inferd, CPU image.
#
#   docker build -t inferd:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 inferd:0.1.0
#
# Stages: `chef` (Rust toolchain + cargo-chef), `planner` (dependency recipe from Cargo.toml and
# Cargo.lock), `build` (dependencies compiled from the recipe in their own layer, then inferd), and the
# runtime image (debian:bookworm-slim, the binary, the shipped models, UID 10001). Editing src/ only
# reruns the last `cargo build`; the dependency layer is rebuilt when Cargo.toml or Cargo.lock change.
#
# Ports: 50051 gRPC (inferd.v1.*, KServe v2 inference.GRPCInferenceService, grpc.health.v1.Health,
# reflection); 9090 plain HTTP (/metrics for Prometheus, /live, /ready); 9002 the MRD (ISMRMRD)
# streaming port for scanner-side reconstruction clients, when INFERD_MRD_ADDR=0.0.0.0:9002 is set.
# The CUDA image is Dockerfile.cuda.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# cargo-chef turns the manifests into a recipe whose dependencies build without the sources.
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only (a layer that source edits leave cached).
RUN cargo chef cook --release --locked --recipe-path recipe.json
# build.rs compiles proto/ and embeds models/{recon-unrolled,recon-radial,lightsb,lcm}.safetensors when present;
# Cargo.toml names the examples and benches under bench/, so those files must be there too.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY models models
COPY bench bench
COPY src src
RUN cargo build --release --locked --bin inferd \
 && install -D -m 0755 target/release/inferd /out/inferd

FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
# Scanner frameworks (Siemens OpenRecon) read the container's description from this label: base64 of
# deploy/openrecon/label.json, e.g. --build-arg OPENRECON_LABEL="$(base64 -w0 deploy/openrecon/label.json)".
ARG OPENRECON_LABEL=""
# The key (with its version suffix after ':') is the one OpenRecon reads, not a reverse-DNS style key.
# hadolint ignore=DL3048
LABEL com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0="${OPENRECON_LABEL}"
LABEL org.opencontainers.image.title="inferd" \
      org.opencontainers.image.description="gRPC inference service: MR reconstruction (ReconResNet), Light Schrödinger Bridges, LCM set/graph aggregation; KServe v2 protocol" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# Package versions are not pinned: the stable suite only receives security fixes, and a pinned
# version disappears from the archive when the next fix lands, which would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin inferd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/inferd/outbox
COPY --from=build /out/inferd /usr/local/bin/inferd
# The default models are also embedded in the binary; the folder holds every shipped model
# (e.g. the LCM baselines) for `--model NAME=/opt/inferd/models/FILE.safetensors`.
COPY --chown=root:root --chmod=0444 models/*.safetensors /opt/inferd/models/
COPY --chown=root:root --chmod=0444 models/README.md /opt/inferd/models/README.md
ENV INFERD_ADDR=0.0.0.0:50051 \
    INFERD_METRICS_ADDR=0.0.0.0:9090 \
    INFERD_DEVICE=cpu \
    INFERD_LOG=info \
    INFERD_LOG_FORMAT=json \
    INFERD_OUTBOX=/var/lib/inferd/outbox
USER 10001:10001
WORKDIR /opt/inferd
EXPOSE 50051/tcp 9090/tcp 9002/tcp
# grpc.health.v1 over the gRPC port: healthy once every model is loaded and warmed up, unhealthy
# again from the start of shutdown. With TLS configured, override it with `--addr https://...`
# and `--tls-ca`/`--tls-domain`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/inferd", "health", "--addr", "http://127.0.0.1:50051", "--timeout-s", "3"]
ENTRYPOINT ["/usr/local/bin/inferd"]
CMD ["serve"]

# inferd: multi-stage build. The runtime image holds the binary (with the shipped default model
# models embedded) and the models/ folder, runs as a non-root user and listens on 50051 (gRPC) and
# 9090 (Prometheus /metrics, /live, /ready).
#
#   docker build -t inferd .
#   docker run --rm -p 50051:50051 -p 9090:9090 inferd
#
# A CUDA image builds the same way from an NVIDIA CUDA devel base with `--features cuda`
# (deploy/README.md).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config && rm -rf /var/lib/apt/lists/*
# Dependencies first, so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY models models
COPY bench bench
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin inferd && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin inferd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin inferd
COPY --from=build /src/target/release/inferd /usr/local/bin/inferd
COPY models /opt/inferd/models
USER 10001
EXPOSE 50051 9090
ENV INFERD_ADDR=0.0.0.0:50051 INFERD_METRICS_ADDR=0.0.0.0:9090 INFERD_DEVICE=cpu INFERD_LOG=info \
    INFERD_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/inferd"]
CMD ["serve"]

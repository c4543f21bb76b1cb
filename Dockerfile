# syntax=docker/dockerfile:1
# One image, one binary: every Flotilla process is `flotilla <command>` — `control`, `gateway`,
# `service NAME`, or `up` for the whole system in one container. Build: docker build -t flotilla .
#
# Dependencies are compiled in their own layer (cargo-chef: a recipe of the workspace's
# manifests), so a change to the code rebuilds only the workspace's crates.

ARG RUST_IMAGE=rust:1.95.0-bookworm

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package flotilla-cli
COPY . .
RUN cargo build --release --locked --package flotilla-cli --bin flotilla \
    && strip target/release/flotilla

# glibc and libgcc only, no shell, no package manager; uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=builder /src/target/release/flotilla /usr/local/bin/flotilla
# The shop's manifest and routes, for `docker run … up` (a laptop's whole system).
COPY flotilla.toml routes.toml /app/
USER 65532:65532
# 8080: the gateway; 7070: the control plane's operator listener.
EXPOSE 8080 7070
ENTRYPOINT ["/usr/local/bin/flotilla"]
# The root filesystem may be read-only: state goes to a writable /tmp (a volume in a cluster).
CMD ["up", "--data-dir", "/tmp/flotilla", "--gateway-addr", "0.0.0.0:8080", "--control-addr", "0.0.0.0:7070"]

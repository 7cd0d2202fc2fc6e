# syntax=docker/dockerfile:1
# outboxd's container image:  docker build -t outboxd:0.1.0 .
# Run it with the configuration mounted at /etc/outboxd/outboxd.toml (config/outboxd.toml documents
# every key); the metrics, /healthz and /readyz listen on port 9187:
#   docker run -v "$PWD/outboxd.toml:/etc/outboxd/outboxd.toml:ro" -p 9187:9187 outboxd:0.1.0

# The toolchain outboxd is built and tested with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# rdkafka (features libz, ssl, curl-static, cmake-build) builds the bundled librdkafka with CMake,
# which wants a C++ compiler besides the image's gcc; it links the system zlib and OpenSSL that
# libz-sys and openssl-sys find with pkg-config (TLS, SCRAM, OAUTHBEARER) and a curl built in (OIDC
# token requests). No libsasl2 (GSSAPI/Kerberos) and no zstd: those features are off.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make cmake pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the benches' files, so they must exist for any build.
COPY bench/ bench/
COPY src/ src/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin outboxd \
 && install -m 0755 target/release/outboxd /usr/local/bin/outboxd

FROM debian:bookworm-slim
# The binary links libssl, libcrypto, libz, libgcc_s, libm and libc (ldd); ca-certificates is for
# sslmode=verify-* and Kafka's TLS (librdkafka trusts the system's CAs when ssl.ca.location is unset).
# Versions follow bookworm's (security) updates, hence unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g libgcc-s1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 outboxd \
 && useradd --system --uid 10001 --gid outboxd --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin outboxd \
 && mkdir -p /etc/outboxd
COPY --from=builder /usr/local/bin/outboxd /usr/bin/outboxd
COPY config/outboxd.toml /usr/share/doc/outboxd/outboxd.toml.example
# Inside a container the metrics must listen on every interface to be reachable (the binary's
# default is 127.0.0.1:9187).
ENV OUTBOXD__METRICS__LISTEN=0.0.0.0:9187
EXPOSE 9187
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# SIGTERM (Docker's default stop signal) commits or aborts the open Kafka transaction; give it time:
# docker stop --time 60.
ENTRYPOINT ["/usr/bin/outboxd"]
CMD ["run", "--config", "/etc/outboxd/outboxd.toml"]

# syntax=docker/dockerfile:1
#
# The Gatehouse image: one image, three binaries in /usr/local/bin:
#   gatehouse-webhook   (Deployment; the chart runs it with `command: [gatehouse-webhook]`)
#   gatehouse-operator  (Deployment; `command: [gatehouse-operator]`)
#   gatehouse-agent     (the ENTRYPOINT: the operator's scan Jobs run the image's `checkout` and
#                        `report` steps with arguments only, no command)
#
#   docker build -t ghcr.io/gatehouse-dev/gatehouse:0.1.0 .
#
# Base images are pinned by digest (from public Dockerfiles that pin the same tags; check them
# with `docker buildx imagetools inspect <image>` before a release build, and bump tag and digest
# together). The binaries link glibc and libgcc_s dynamically (rustls with ring, no OpenSSL), so
# the runtime is distroless `cc` (glibc, libgcc, CA certificates, a nonroot user), built on the
# same Debian release (12, bookworm) as the build stage.

ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS build
# The image's own toolchain (1.95.0, the one rust-toolchain.toml names): without this, rustup
# would download the clippy and rustfmt components the toolchain file lists.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5
WORKDIR /src
# Only what the build needs (see .dockerignore); every workspace member's manifest and sources,
# since Cargo loads the whole workspace.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crds crds
COPY webhook webhook
COPY operator operator
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/gatehouse-webhook target/release/gatehouse-operator \
       target/release/gatehouse-agent /out/

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="gatehouse" \
      org.opencontainers.image.description="Gatehouse: security scans of GitHub pull requests in your Kubernetes cluster (gatehouse-webhook, gatehouse-operator, gatehouse-agent)" \
      org.opencontainers.image.source="https://github.com/gatehouse-dev/gatehouse" \
      org.opencontainers.image.url="https://github.com/gatehouse-dev/gatehouse" \
      org.opencontainers.image.documentation="https://github.com/gatehouse-dev/gatehouse/tree/main/docs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Gatehouse" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=build --chown=0:0 --chmod=0755 /out/ /usr/local/bin/
# distroless's nonroot user, by number: the kubelet can only verify runAsNonRoot for a numeric
# USER. The chart and the scan Jobs run as 65532 with a read-only root filesystem, so nothing
# here is written to at run time.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gatehouse-agent"]

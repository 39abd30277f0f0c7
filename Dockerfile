# syntax=docker/dockerfile:1
#
# The homelab image (the in-cluster sync engine runs `homelab sync --in-cluster`): a static
# musl build of homelab on `scratch`, plus git — the engine runs real git — with its HTTP
# helpers, the few shared libraries they load and the CA bundle, copied from Alpine.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/<owner>/homelab:<version> .
#
# Each platform builds natively (the release workflow runs one runner per architecture), so no
# cross toolchain is needed. The Deployment mounts an emptyDir at /tmp for git checkouts.

ARG RUST_IMAGE=rust:1.90-alpine3.22
ARG ALPINE_IMAGE=alpine:3.22

FROM ${RUST_IMAGE} AS build
# ring builds C and assembly; on Alpine the Rust target is musl, linked statically by default.
RUN apk add --no-cache musl-dev gcc make perl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin homelab \
 && cp target/release/homelab /homelab \
 && if ldd /homelab 2>/dev/null | grep -q '=>'; then echo "homelab is not static" >&2; exit 1; fi

FROM ${ALPINE_IMAGE} AS git
RUN apk add --no-cache git ca-certificates
# Collect git, its remote helpers and every library they load (ldd), dereferencing symlinks.
RUN set -eu; \
    progs="/usr/bin/git /usr/libexec/git-core/git-remote-http /usr/libexec/git-core/git-remote-https"; \
    libs=$(for p in $progs; do ldd "$p" | awk '/=>/ {print $3} !/=>/ && $1 ~ /^\// {print $1}'; done | sort -u); \
    mkdir -p /out/tmp && chmod 1777 /out/tmp; \
    tar -chf - $progs $libs /etc/ssl/certs/ca-certificates.crt | tar -xf - -C /out

FROM scratch
COPY --from=git /out/ /
COPY --from=build /homelab /usr/local/bin/homelab
ENV PATH=/usr/local/bin:/usr/bin \
    HOME=/tmp \
    GIT_EXEC_PATH=/usr/libexec/git-core \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/homelab"]
CMD ["sync", "--in-cluster"]

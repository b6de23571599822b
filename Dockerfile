# The Airbyte image of destination-redis.
#
#   docker build -t destination-redis:dev .                       # build from source (the default)
#   docker build --build-arg BINARY=prebuilt -t destination-redis:dev .
#                   # use target/release/destination-redis built on a Debian bookworm host instead
#
# With BuildKit (the default builder of Docker 23+; DOCKER_BUILDKIT=1 on 20.10) only the stage named
# by BINARY is built; the legacy builder builds both stages and works too, only slower. The builder
# uses Debian's own Rust (rustc-web from bookworm-security), so the image builds from Debian's
# mirrors alone; when the build context holds a `vendor/` directory (from `cargo vendor`), crates
# come from it and no crate registry is needed.

ARG DEBIAN_SUITE=bookworm
ARG BINARY=source

# ---- take a binary built outside (same Debian suite, so the same glibc and OpenSSL) --------------
# The legacy builder (no BuildKit) builds every stage, even the one BINARY does not name: with
# Cargo.toml beside it, the COPY is valid when there is no binary (the bracket makes it optional).
# First in the file, so that `--target prebuilt` builds nothing else.
FROM scratch AS prebuilt
COPY Cargo.toml target/release/destination-redi[s] /out/

# ---- or build the release binary from source ----------------------------------------------------
FROM debian:${DEBIAN_SUITE}-slim AS source
ARG DEBIAN_SUITE
RUN echo "deb http://deb.debian.org/debian-security ${DEBIAN_SUITE}-security main" \
        > /etc/apt/sources.list.d/security.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        rustc-web cargo-web gcc libc6-dev pkg-config libssl-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN if [ -d vendor ]; then \
        mkdir -p .cargo \
        && printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' \
            > .cargo/config.toml; \
    fi \
 && cargo build --release --locked --bin destination-redis \
 && mkdir -p /out && cp target/release/destination-redis /out/destination-redis

FROM ${BINARY} AS binary

# ---- the runtime image --------------------------------------------------------------------------
FROM debian:${DEBIAN_SUITE}-slim
ARG VERSION=0.1.0
# libssl3 and zlib for the SSH tunnel (libssh2), CA certificates for TLS against public roots;
# coreutils keeps printenv, which Airbyte's image checks use.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group airbyte \
 && mkdir -p /airbyte/bin \
 && chown -R airbyte:airbyte /airbyte
COPY --from=binary /out/destination-redis /airbyte/bin/destination-redis
ENV AIRBYTE_ENTRYPOINT="/airbyte/bin/destination-redis"
ENTRYPOINT ["/airbyte/bin/destination-redis"]
LABEL io.airbyte.name="destination-redis/destination-redis" \
      io.airbyte.version="${VERSION}"
USER airbyte
WORKDIR /airbyte

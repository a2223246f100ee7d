# The `mealkitz` image: the release binary on Debian slim, run as an unprivileged user.
#
#   docker build -t mealkitz .
#   docker run --rm -p 8000:8000 mealkitz                      # embedded SQLite, in the container
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgres://… mealkitz
#
# Needs BuildKit (the default builder since Docker 23; its built-in Dockerfile frontend knows
# `RUN --mount`, so no `# syntax=` line and no frontend image to pull). See docs/operations.md
# ("Deploying") for the Kubernetes side.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Only what the binary is built from. Cargo.toml names every bench target explicitly, and cargo
# checks that each one exists when it reads the manifest, so benches/ comes along even though
# no bench is built. The web pages (web/*.html, *.css, *.js, *.svg) and the SQL migrations are
# compiled into the binary (include_str! in src/api/pages.rs, sqlx::migrate! in src/store).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY migrations ./migrations
COPY web ./web

# Dependency caching: the cargo registry, git checkouts and the target directory live in
# BuildKit cache mounts, so a rebuild after a source change recompiles only this crate. A cache
# mount is not part of the image, so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=mealkitz-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=mealkitz-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=mealkitz-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mealkitz \
    && install -D -m 0755 target/release/mealkitz /out/mealkitz

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to a managed PostgreSQL or Redis (sslmode=require, rediss://).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid, so Kubernetes' runAsNonRoot can verify it and volumes can be
# chowned to it (fsGroup). The working directory is writable by that user: without
# DATABASE_URL the engine creates its SQLite file, mealkitz.db, there.
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" mealkitz \
    && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /var/lib/mealkitz \
       --shell /usr/sbin/nologin mealkitz \
    && install -d -o "${APP_UID}" -g "${APP_GID}" -m 0750 /var/lib/mealkitz

COPY --from=build /out/mealkitz /usr/local/bin/mealkitz

USER ${APP_UID}:${APP_GID}
WORKDIR /var/lib/mealkitz
ENV MEALKITZ_BIND=0.0.0.0:8000
EXPOSE 8000

# No HEALTHCHECK: the slim image has no curl or wget, and Kubernetes probes /health and /ready
# itself (k8s/base/deployment.yaml).
# SIGTERM (Docker's and Kubernetes' stop signal) starts the graceful drain; the process is PID 1
# and handles it itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mealkitz"]
CMD ["serve"]

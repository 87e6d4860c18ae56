# control-service container: built from the workspace root with
#   docker build -f deploy/control-service.Dockerfile -t bangui/control-service .
# The root filesystem can be mounted read-only. fail2ban-client is included
# for StartJail (mount fail2ban's configuration and set
# CONTROL_FAIL2BAN_CONFIG_DIR); the fail2ban server itself is not started.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p control-service \
    && install -D -m 0755 target/release/control-service /out/control-service

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fail2ban \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/control-service /usr/local/bin/control-service
# The SQLite database lives on a volume: the root filesystem may be read-only.
RUN mkdir -p /var/lib/control-service && chown 65532:65532 /var/lib/control-service
VOLUME /var/lib/control-service
# Non-root by default. fail2ban's socket is root-only (mode 0700): to manage a
# fail2ban, run as UID 0 with every capability dropped (see deploy/README.md).
USER 65532:65532
# One malloc arena: the service waits on I/O, and glibc's arena per thread
# (sqlx's SQLite threads, tokio's workers) kept freed memory of a blocklist
# import: 113-129 MiB with two arenas, 88 MiB with one (RELIABILITY.md).
ENV MALLOC_ARENA_MAX=1 \
    CONTROL_LISTEN=0.0.0.0:50052 \
    CONTROL_METRICS_LISTEN=0.0.0.0:9465 \
    CONTROL_AGENT_LISTEN=0.0.0.0:50053 \
    CONTROL_LOG_FORMAT=json \
    CONTROL_DATABASE_URL=sqlite:///var/lib/control-service/control.db \
    CONTROL_FAIL2BAN_SOCKET=/var/run/fail2ban/fail2ban.sock
EXPOSE 50052 50053 9465
ENTRYPOINT ["/usr/local/bin/control-service"]

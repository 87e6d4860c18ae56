# geo-service container: built from the workspace root with
#   docker build -f deploy/geo-service.Dockerfile -t bangui/geo-service .
# Runs as a non-root user; the root filesystem can be mounted read-only.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p geo-service \
    && install -D -m 0755 target/release/geo-service /out/geo-service

FROM debian:bookworm-slim
COPY --from=build /out/geo-service /usr/local/bin/geo-service
# The SQLite cache lives on a volume: the root filesystem may be read-only.
RUN mkdir -p /var/lib/geo-service && chown 65532:65532 /var/lib/geo-service
VOLUME /var/lib/geo-service
USER 65532:65532
ENV GEO_LISTEN=0.0.0.0:50051 \
    GEO_METRICS_LISTEN=0.0.0.0:9464 \
    GEO_LOG_FORMAT=json \
    GEO_DATABASE_URL=sqlite:///var/lib/geo-service/geo.db \
    MIMALLOC_ARENA_EAGER_COMMIT=0 \
    MIMALLOC_PURGE_DELAY=10
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/geo-service"]

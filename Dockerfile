# One image for every BimRide service: `docker run bimride <subcommand>`.

# Build: a release binary, with librdkafka compiled in.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bimride \
 && cp target/release/bimride /usr/local/bin/bimride

# Run: a slim Debian with the TLS library, and curl for health checks.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bimride
COPY --from=build /usr/local/bin/bimride /usr/local/bin/bimride
USER 10001:10001
ENV BIMRIDE_LOG_FORMAT=json
EXPOSE 8080 8090 9464
ENTRYPOINT ["/usr/local/bin/bimride"]
CMD ["up", "--http", "0.0.0.0:8080", "--registry-listen", "0.0.0.0:8081"]

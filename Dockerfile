# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full Rust toolchain, run on a slim Debian image as a
# non-root user. TLS is rustls (ring): no OpenSSL in the image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY crates crates
COPY benches benches
COPY examples examples
COPY tests tests
RUN cargo build --release --locked --bin lingua-proxy --example mock-upstream \
 && cp target/release/lingua-proxy target/release/examples/mock-upstream /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/lingua lingua \
 && mkdir -p /models /var/lib/lingua-proxy && chown lingua /models /var/lib/lingua-proxy
COPY --from=build /usr/local/bin/lingua-proxy /usr/local/bin/mock-upstream /usr/local/bin/
COPY proxy.toml /etc/lingua-proxy/proxy.toml
USER lingua
# The Hugging Face model cache lives on a volume (see docker-compose.yml).
ENV HF_HOME=/models \
    LINGUA_PROXY_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["lingua-proxy"]
CMD ["serve", "--config", "/etc/lingua-proxy/proxy.toml"]

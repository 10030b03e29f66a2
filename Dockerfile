# syntax=docker/dockerfile:1
# Build a static binary against musl, then ship it alone on a distroless base as non-root.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# The root manifest declares the benches; cargo reads their paths even when it builds none.
COPY benches ./benches
# Without the `sandbox` feature the workspace's sandbox crate is not built: the image carries
# neither the simulator nor tokio's test-util.
RUN cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl \
    --bin workerpool-operator \
    && cp target/x86_64-unknown-linux-musl/release/workerpool-operator /workerpool-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /workerpool-operator /usr/local/bin/workerpool-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/workerpool-operator"]
CMD ["run"]

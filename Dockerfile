# syntax=docker/dockerfile:1
# Multi-stage build: a release binary on Debian, shipped on distroless (glibc, no shell),
# running as the unprivileged user 65532.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fluxgate \
 && strip target/release/fluxgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fluxgate /usr/local/bin/fluxgate
USER 65532:65532
# glibc's allocator gives back what start-up frees (the Deployment sets the same; docs/performance.md, "Memory at
# scale").
ENV GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072:glibc.malloc.arena_max=2
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/fluxgate"]
CMD ["serve", "--help"]

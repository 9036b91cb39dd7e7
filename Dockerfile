# The herdsman demo (examples/active-users) in a container.
#
#   docker build -t herdsman-demo .
#   docker run --rm -p 127.0.0.1:3000:3000 herdsman-demo
#
# or `docker compose up` (docker-compose.yml). The demo runs in the docker
# profile: it listens on 0.0.0.0:3000 (a container's loopback is out of
# reach from the published port), and without HERDSMAN__ADMIN__TOKEN it
# makes an admin token for the run and prints the dashboard's URL on
# stderr (`docker logs`). docs/DEPLOYMENT.md says more.

# ---- builder: the release binary
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# The whole workspace: cargo resolves every member's manifest.
COPY . .
RUN cargo build --release --locked -p active-users \
    && install -m 0755 target/release/active-users /usr/local/bin/active-users

# ---- runtime: the binary alone, as a user without privileges
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin herdsman
COPY --from=builder /usr/local/bin/active-users /usr/local/bin/active-users
USER herdsman
ENV HERDSMAN_ENV=docker
EXPOSE 3000
# SIGTERM (docker stop's): the demo stops accepting, ends its event streams
# with a last `shutdown` event and lets requests in progress finish within
# server.shutdown_timeout (8 s in the docker profile, under docker stop's
# 10 s), then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/active-users"]

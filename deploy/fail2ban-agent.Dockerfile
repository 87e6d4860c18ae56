# fail2ban-agent container (for the DaemonSet on labelled nodes): built from
# the workspace root with
#   docker build -f deploy/fail2ban-agent.Dockerfile -t bangui/fail2ban-agent .
# It talks to the host's fail2ban through the mounted socket and keeps the
# host's identity on a hostPath volume (/var/lib/fail2ban-agent), so a new
# pod on the same node is the same host.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fail2ban-agent \
    && install -D -m 0755 target/release/fail2ban-agent /out/fail2ban-agent

FROM debian:bookworm-slim
COPY --from=build /out/fail2ban-agent /usr/local/bin/fail2ban-agent
# fail2ban's socket is root-only (mode 0700): the DaemonSet runs the agent
# as UID 0 with every capability dropped and a read-only root filesystem.
# hadolint ignore=DL3002
USER 0:0
ENV FAIL2BAN_AGENT_STATE_DIR=/var/lib/fail2ban-agent \
    FAIL2BAN_AGENT_FAIL2BAN_SOCKET=/var/run/fail2ban/fail2ban.sock \
    FAIL2BAN_AGENT_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/fail2ban-agent"]

# The resource's image: check, in and out at /opt/resource, and the dockerd
# (with containerd, runc and iptables) that a put starts for itself.
#
# Both bases are build args so a hardened or mirrored base can be used:
#   --build-arg BUILDER_IMAGE=... --build-arg RUNTIME_IMAGE=...
# The runtime base must be Debian trixie or newer (or a derivative with the
# same packages): bookworm's dockerd 20.10 cannot load zstd layers.
# Only classic-builder features are used: `make image` builds it through the
# Engine API without BuildKit, and `docker build` (BuildKit) works as well.
ARG BUILDER_IMAGE=golang:1.26-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# Modules first: this layer stays cached while only the code changes.
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
ARG VERSION=dev
# Static binaries (no libc needed), without local paths in them.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/concourse-docker/docker-image-resource/pkg/resource.Version=${VERSION}" \
      -o /out/ ./cmd/check ./cmd/in ./cmd/out

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=dev
ARG SOURCE=https://github.com/concourse-docker/docker-image-resource
ARG REVISION=
# Size: no recommends (git, apparmor, xz...), no docs, man pages or
# translations (kept out by dpkg, whatever the base is configured to do), no
# apt lists. Of containerd, dockerd needs only containerd and
# containerd-shim-runc-v2: ctr and the legacy v1 shims (48 MB) are never
# unpacked.
#
# iptables: the nf_tables backend (iptables-nft), set explicitly. dockerd's
# rules live in the resource container's own network namespace, so they need
# not match the worker's backend; nf_tables is in every kernel a current
# worker runs, while the legacy x_tables backend is optional in recent kernels
# (CONFIG_IP_NF_IPTABLES_LEGACY) and distributions are dropping it.
RUN set -eux; \
    printf '%s\n' \
      'path-exclude /usr/share/doc/*' \
      'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' \
      'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/share/lintian/*' \
      'path-exclude /usr/bin/ctr' \
      'path-exclude /usr/bin/containerd-shim' \
      'path-exclude /usr/bin/containerd-shim-runc-v1' \
      > /etc/dpkg/dpkg.cfg.d/docker-image-resource; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates containerd docker.io iptables runc; \
    update-alternatives --set iptables /usr/sbin/iptables-nft; \
    update-alternatives --set ip6tables /usr/sbin/ip6tables-nft; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
      /var/log/apt /var/log/dpkg.log /var/log/alternatives.log; \
    dockerd --version; containerd --version; runc --version; iptables --version
COPY --from=builder /out/check /out/in /out/out /opt/resource/
# pkg/daemon prepares cgroups for the nested dockerd only when this is set:
# on a host the same steps would move the host's processes.
ENV DOCKER_IMAGE_RESOURCE_IN_CONTAINER=1
LABEL org.opencontainers.image.title="docker-image-resource" \
      org.opencontainers.image.description="Concourse resource type that tracks, fetches, builds and pushes Docker images" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

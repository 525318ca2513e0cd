# shellcheck shell=bash
# The S3 server for tests and benchmarks: moto 5.2.5 (PyPI), pinned in
# tests/peers/s3-requirements.txt, installed into target/peers/s3 and run
# on 127.0.0.1 on a free port. Sourced by scripts/test and bench/s3.
#
#   s3_install ROOT         creates/refreshes the venv (skipped when its stamp matches)
#   s3_start ROOT BUCKET    starts the server, creates BUCKET, exports the
#                           AWS_* variables object_store reads, TENAX_TEST_S3_URL,
#                           and S3_PID / S3_ENDPOINT
#   s3_stop                 stops it
#
# moto keeps objects in memory and checks no signatures; its stock server
# is threaded (fine here: nothing relies on conditional writes).

s3_install() {
    local root=$1 python=${PYTHON:-python3}
    local venv="$root/target/peers/s3" requirements="$root/tests/peers/s3-requirements.txt"
    local stamp="$venv/.tenax-requirements.sha256" want have=""
    want=$("$python" -c 'import hashlib, sys, platform
data = open(sys.argv[1], "rb").read()
print(hashlib.sha256(data + platform.python_version().encode()).hexdigest())' "$requirements")
    if [[ -x "$venv/bin/moto_server" && -f "$stamp" ]]; then
        have=$(cat "$stamp")
    fi
    if [[ "$have" == "$want" ]]; then
        echo "s3: moto up to date in $venv"
        return
    fi
    echo "s3: installing moto into $venv"
    local started=$SECONDS
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$requirements"
    "$venv/bin/python" -c 'import moto, flask, flask_cors'
    echo "$want" >"$stamp"
    echo "s3: moto installed in $((SECONDS - started)) s"
}

s3_start() {
    local root=$1 bucket=$2 venv="$1/target/peers/s3" port attempt
    for attempt in 1 2 3; do
        port=$("$venv/bin/python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$root/target/peers/s3.log" 2>&1 &
        S3_PID=$!
        S3_ENDPOINT="http://127.0.0.1:$port"
        for _ in $(seq 100); do
            if curl -fs -o /dev/null "$S3_ENDPOINT/"; then
                break
            fi
            kill -0 "$S3_PID" 2>/dev/null || break
            sleep 0.1
        done
        if curl -fs -X PUT -o /dev/null "$S3_ENDPOINT/$bucket"; then
            echo "s3: moto (pid $S3_PID) at $S3_ENDPOINT, bucket $bucket (attempt $attempt)"
            export S3_PID S3_ENDPOINT
            export AWS_ENDPOINT_URL="$S3_ENDPOINT" AWS_REGION=us-east-1 \
                AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ALLOW_HTTP=true
            export TENAX_TEST_S3_URL="s3://$bucket"
            return 0
        fi
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
    done
    echo "s3: moto did not start; see $root/target/peers/s3.log" >&2
    return 1
}

s3_stop() {
    if [[ -n "${S3_PID:-}" ]]; then
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
        S3_PID=
    fi
}

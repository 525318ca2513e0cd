# shellcheck shell=bash
# The reference tus server (bench/tus-server) for the bench scripts: sourced
# with `root` and `target_dir` set; installs @tus/server into
# $target_dir/peers/tus-server from the committed lock file with `npm ci`
# (skipped when the stamp, the hash of the lock file, the manifest and the
# Node major version, matches; under the same lock as scripts/test's peers)
# and copies server.mjs there on every run. Sets `tus_dir` and `tus_args`
# (`--tus-server DIR --node PATH`, empty with BENCH_NO_TUS_SERVER=1).
node=${NODE:-node}
npm=${NPM:-npm}
tus_source="$root/bench/tus-server"
tus_dir="$target_dir/peers/tus-server"
tus_stamp="$tus_dir/.tenax-package-lock.sha256"
tus_args=()

install_tus_server() {
    local want have=""
    if ! command -v "$node" >/dev/null 2>&1 || ! command -v "$npm" >/dev/null 2>&1; then
        echo "${0##*/}: '$node' and '$npm' are needed for @tus/server (Node >= 20.19);" \
            "set BENCH_NO_TUS_SERVER=1 to run without it" >&2
        exit 1
    fi
    want=$({ cat "$tus_source/package-lock.json" "$tus_source/package.json"
             "$node" -p 'process.versions.node.split(".")[0]'; } | sha256sum | cut -d' ' -f1)
    if [[ -f "$tus_stamp" ]]; then
        have=$(cat "$tus_stamp")
    fi
    if [[ "$have" != "$want" || ! -f "$tus_dir/node_modules/@tus/server/package.json" ]]; then
        echo "${0##*/}: installing @tus/server into $tus_dir"
        rm -rf "$tus_dir"
        mkdir -p "$tus_dir"
        cp "$tus_source/package.json" "$tus_source/package-lock.json" "$tus_dir/"
        (cd "$tus_dir" && "$npm" ci --no-audit --no-fund --ignore-scripts --loglevel=error)
        echo "$want" >"$tus_stamp"
    fi
    cp "$tus_source/server.mjs" "$tus_dir/"
    tus_args=(--tus-server "$tus_dir" --node "$(command -v "$node")")
}

if [[ -z "${BENCH_NO_TUS_SERVER:-}" ]]; then
    mkdir -p "$target_dir/peers"
    if command -v flock >/dev/null 2>&1; then
        # The same lock as scripts/test's peer installs.
        exec 9>"$target_dir/peers/.lock"
        flock 9
        install_tus_server
        flock -u 9
        exec 9>&-
    else
        install_tus_server
    fi
fi


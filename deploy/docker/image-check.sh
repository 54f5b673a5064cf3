#!/usr/bin/env bash
# image-check: what can be checked of the container image without a Docker
# engine (make image-check runs this from the repository root).
#
#  1. The Dockerfile's go build matches the Makefile's build target: the same
#     flags (-trimpath) and the same -X ldflags, plus CGO_ENABLED=0; the image
#     runs as the numeric user 65532:65532 and starts /sipwake.
#  2. Builds the binary exactly as the Dockerfile does (flags read from it)
#     and checks it is statically linked (go version -m build settings, and the
#     ELF headers through elfcheck.go; readelf/file output when present).
#  3. Runs it as uid/gid 65532 (setpriv, when run as root; as the calling
#     non-root user otherwise) from an empty directory, as in the image:
#     version, config default, validate on a minimal config, then serve on
#     loopback ports for a few seconds with /livez and /readyz probed, SIGTERM,
#     exit status 0, and the embedded store created under ./data.
#
# Environment: GO (go), VERSION and COMMIT (stamped, as in the Makefile),
# IMAGE_CHECK_TMP (parent of the scratch directory, /tmp; it must be
# traversable by uid 65532).
set -euo pipefail
trap 'echo "image-check: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

cd "$(dirname "$0")/../.."
GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
RUN_UID=65532
RUN_GID=65532
DOCKERFILE=deploy/docker/Dockerfile

fail() { echo "image-check: FAIL: $*" >&2; exit 1; }
step() { echo "image-check: $*"; }

# ---------------------------------------------------------------- 1. flags

# The Dockerfile's build command, continuation lines joined.
docker_build=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$DOCKERFILE" | grep -E 'go build .*\./cmd/sipwake' | head -n1) ||
	fail "$DOCKERFILE: no 'go build ... ./cmd/sipwake' line"
make_build=$(grep -E '^[[:space:]]+\$\(GO\) build .*\./cmd/sipwake' Makefile | head -n1) ||
	fail "Makefile: no '\$(GO) build ... ./cmd/sipwake' line in the build target"
make_ldflags=$(sed -n 's/^LDFLAGS[[:space:]]*:=[[:space:]]*//p' Makefile | head -n1)
[ -n "$make_ldflags" ] || fail "Makefile: no LDFLAGS := line"
case $make_build in
*"-ldflags '\$(LDFLAGS)'"*) ;;
*) fail "Makefile build target does not pass -ldflags '\$(LDFLAGS)': $make_build" ;;
esac

docker_ldflags=$(sed -n 's/.*-ldflags "\([^"]*\)".*/\1/p' <<<"$docker_build")
[ -n "$docker_ldflags" ] || fail "$DOCKERFILE: go build has no -ldflags \"...\""
# Make writes $(VAR), the Dockerfile ${VAR}.
norm_make_ldflags=$(sed -e 's/\$(\([A-Za-z_]*\))/${\1}/g' <<<"$make_ldflags")
[ "$norm_make_ldflags" = "$docker_ldflags" ] ||
	fail "ldflags differ: Makefile '$make_ldflags', Dockerfile '$docker_ldflags'"

# The other flags: what is left after the command, -ldflags, -o and the package.
other_flags() {
	sed -E -e 's/.*(\$\(GO\)|[[:space:]]go) build//' \
		-e "s/-ldflags ('[^']*'|\"[^\"]*\")//" \
		-e 's/-o [^ ]+//' -e 's#\./cmd/sipwake##' <<<"$1" | tr -s ' \t' '\n\n' | { grep -v '^$' || true; } | sort | tr '\n' ' '
}
make_flags=$(other_flags "$make_build")
docker_flags=$(other_flags "$docker_build")
[ "$make_flags" = "$docker_flags" ] ||
	fail "build flags differ: Makefile '$make_flags', Dockerfile '$docker_flags'"
[[ " $docker_flags " == *" -trimpath "* ]] || fail "$DOCKERFILE: go build lacks -trimpath"
grep -Eq 'CGO_ENABLED=0[[:space:]]' <<<"$docker_build" || fail "$DOCKERFILE: go build is not run with CGO_ENABLED=0"
grep -Eq '^USER[[:space:]]+65532:65532[[:space:]]*$' "$DOCKERFILE" || fail "$DOCKERFILE: USER 65532:65532 missing"
grep -Eq '^ENTRYPOINT[[:space:]]+\["/sipwake"\]' "$DOCKERFILE" || fail "$DOCKERFILE: ENTRYPOINT [\"/sipwake\"] missing"
for p in 5060/udp 5060/tcp 5061/tcp 9090/tcp; do
	grep -Eq "^EXPOSE[[:space:]](.*[[:space:]])?$p([[:space:]]|\$)" "$DOCKERFILE" || fail "$DOCKERFILE: EXPOSE lacks $p"
done
# The build stage's Go must be at least go.mod's.
mod_go=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)
img_go=$(sed -n 's/^ARG GO_VERSION=\([0-9]*\.[0-9]*\).*/\1/p' "$DOCKERFILE")
[ -n "$img_go" ] || fail "$DOCKERFILE: no ARG GO_VERSION=X.Y"
[ "$(printf '%s\n%s\n' "$mod_go" "$img_go" | sort -V | head -n1)" = "$mod_go" ] ||
	fail "$DOCKERFILE: GO_VERSION $img_go is older than go.mod's go $mod_go"
step "Dockerfile and Makefile agree: flags '${docker_flags% }', ldflags '$docker_ldflags', CGO_ENABLED=0, golang:$img_go >= go $mod_go"

# ---------------------------------------------------------------- 2. build

tmp=$(mktemp -d "${IMAGE_CHECK_TMP:-/tmp}/sipwake-image-check.XXXXXX")
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
chmod 0755 "$tmp"
mkdir -m 0755 "$tmp/bin"
bin=$tmp/bin/sipwake

ldflags=${docker_ldflags//'${VERSION}'/$VERSION}
ldflags=${ldflags//'${COMMIT}'/$COMMIT}
read -r -a flags <<<"$docker_flags"
step "building: CGO_ENABLED=0 $GO build ${flags[*]} -ldflags \"$ldflags\" ./cmd/sipwake"
CGO_ENABLED=0 "$GO" build "${flags[@]}" -ldflags "$ldflags" -o "$bin" ./cmd/sipwake
chmod 0755 "$bin"

# ---------------------------------------------------------------- 2b. static

buildinfo=$("$GO" version -m "$bin")
grep -Eq '^[[:space:]]+build[[:space:]]+CGO_ENABLED=0$' <<<"$buildinfo" || fail "go version -m: CGO_ENABLED is not 0"
grep -Eq '^[[:space:]]+build[[:space:]]+-trimpath=true$' <<<"$buildinfo" || fail "go version -m: not built with -trimpath"
# (-trimpath keeps -ldflags out of the build info; `sipwake version` below
# shows the stamped version and commit.)
"$GO" run deploy/docker/elfcheck.go "$bin"
if command -v readelf >/dev/null 2>&1; then
	if readelf -lW "$bin" | grep -q 'INTERP'; then fail "readelf: program interpreter present"; fi
	readelf -d "$bin" 2>&1 | grep -q 'no dynamic section' || fail "readelf: the binary has a dynamic section"
	step "readelf: no interpreter, no dynamic section"
fi
if command -v file >/dev/null 2>&1; then
	step "file: $(file -b "$bin")"
	file -b "$bin" | grep -Eq 'statically linked|static-pie linked' || fail "file does not call it statically linked"
fi

# ---------------------------------------------------------------- 3. run

run=$tmp/run
mkdir -m 0755 "$run"
if [ "$(id -u)" -eq 0 ]; then
	command -v setpriv >/dev/null 2>&1 ||
		fail "setpriv not found (Debian package util-linux); it runs the binary as uid $RUN_UID"
	chown "$RUN_UID:$RUN_GID" "$run"
	as_user=(setpriv --reuid "$RUN_UID" --regid "$RUN_GID" --clear-groups)
	want_uid=$RUN_UID
else
	step "not root: running as uid $(id -u) instead of $RUN_UID (already not root)"
	as_user=()
	want_uid=$(id -u)
fi
# The environment of a container: nothing inherited but PATH, no HOME.
sipwake() { (cd "$run" && env -i PATH=/usr/bin:/bin "${as_user[@]}" "$bin" "$@"); }

out=$(sipwake version)
grep -Eq "^version:[[:space:]]+$VERSION\$" <<<"$out" || fail "sipwake version does not print version $VERSION: $out"
grep -Eq "^commit:[[:space:]]+$COMMIT\$" <<<"$out" || fail "sipwake version does not print commit $COMMIT: $out"
step "sipwake version: $(tr '\n' ' ' <<<"$out")"

sipwake config default >"$tmp/default.yaml"
cmp -s "$tmp/default.yaml" deploy/config/sipwake.yaml ||
	fail "sipwake config default differs from deploy/config/sipwake.yaml (the copy the image ships)"
step "sipwake config default: $(wc -l <"$tmp/default.yaml") lines, equal to deploy/config/sipwake.yaml"

# Loopback, ports picked by the kernel; admin on "localhost" so that it is a
# different address from ops. The embedded store keeps its default path
# (./data/sipwake.db), relative to the empty working directory.
cat >"$tmp/sipwake.yaml" <<'EOF'
node_id: image-check
sip:
  listen: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]
ops:
  listen: "127.0.0.1:0"
admin:
  listen: "localhost:0"
drain:
  delay: 0s
  timeout: 5s
EOF
chmod 0644 "$tmp/sipwake.yaml"
sipwake validate -c "$tmp/sipwake.yaml" || fail "sipwake validate refused the minimal config"
step "sipwake validate: ok"

# http_get HOST:PORT PATH prints the status code (bash /dev/tcp: no curl in the image either).
http_get() {
	local host=${1%:*} port=${1##*:} status
	exec 3<>"/dev/tcp/$host/$port" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
	read -r _ status _ <&3 || status=""
	cat <&3 >/dev/null || true
	exec 3<&-
	echo "$status"
}

log=$tmp/serve.log
(cd "$run" && exec env -i PATH=/usr/bin:/bin "${as_user[@]}" "$bin" serve -c "$tmp/sipwake.yaml") >"$log" 2>&1 &
pid=$!
ops=""
for _ in $(seq 100); do
	kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "sipwake serve exited early"; }
	ops=$(sed -n 's/.*"msg":"ops listening".*"addr":"\([^"]*\)".*/\1/p' "$log" | head -n1)
	[ -n "$ops" ] && break
	sleep 0.1
done
[ -n "$ops" ] || { cat "$log" >&2; fail "no 'ops listening' log line"; }
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = "$want_uid" ] || fail "sipwake serve runs as uid $uid, want $want_uid"
live=$(http_get "$ops" /livez)
[ "$live" = 200 ] || { cat "$log" >&2; fail "/livez answered '$live'"; }
ready=""
for _ in $(seq 100); do
	ready=$(http_get "$ops" /readyz)
	[ "$ready" = 200 ] && break
	sleep 0.1
done
[ "$ready" = 200 ] || { cat "$log" >&2; fail "/readyz answered '$ready', want 200"; }
step "sipwake serve as uid $uid on $ops: /livez 200, /readyz 200"
sleep 2
kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "sipwake serve died"; }

# exited: gone, or a zombie (kill -0 still succeeds on an unreaped child).
# One read of the status file: bash may reap the child between two looks.
exited() {
	local st
	st=$(cat "/proc/$pid/status" 2>/dev/null) || return 0
	[[ $st == *$'\nState:\tZ'* ]]
}
kill -TERM "$pid"
start=$SECONDS
for _ in $(seq 200); do
	exited && break
	sleep 0.1
done
if ! exited; then
	# SIGQUIT: the Go runtime writes every goroutine's stack to the log.
	kill -QUIT "$pid" 2>/dev/null || true
	sleep 1
	cat "$log" >&2
	fail "sipwake serve still running 20 s after SIGTERM (drain.timeout is 5s); goroutines above"
fi
rc=0
wait "$pid" || rc=$?
pid=""
[ "$rc" -eq 0 ] || { cat "$log" >&2; fail "sipwake serve exited $rc after SIGTERM, want 0"; }
grep -q '"msg":"stopped"' "$log" || { cat "$log" >&2; fail "no 'stopped' log line after SIGTERM"; }
[ -f "$run/data/sipwake.db" ] || fail "the embedded store was not created at ./data/sipwake.db"
owner=$(stat -c %u "$run/data/sipwake.db")
[ "$owner" = "$want_uid" ] || fail "./data/sipwake.db is owned by uid $owner, want $want_uid"
step "SIGTERM: drained and exited 0 within $((SECONDS - start)) s; ./data/sipwake.db created by uid $owner"
echo "image-check: OK"

#!/bin/sh
# usepod-agent installer for Linux and macOS: `curl -fsSL https://usepod.ai/install.sh | sh`.
# Downloads the release binary for this OS/arch, verifies its .sha256 and installs it atomically.
#
# Environment (all optional):
#   USEPOD_VERSION   release tag to install, e.g. v0.4.0 (default: the tag in $USEPOD_BASE_URL/agent-latest)
#   USEPOD_BASE_URL  site holding the agent-latest pointer (default: https://usepod.ai)
#   USEPOD_REPO      release download base; assets are at $USEPOD_REPO/<tag>/<asset>
#                    (default: https://github.com/usepod/usepod-agent/releases/download)
#   USEPOD_PREFIX    install prefix; the binary goes to $USEPOD_PREFIX/bin/usepod-agent (default: /usr/local)

# Everything runs inside main, called on the last line, so a download cut short never runs half a script.
set -eu

# Used when the latest pointer cannot be read; keep equal to "v" + AGENT_VERSION in src/version.ts.
FALLBACK_VERSION="v0.4.0"

TMP_DIR=""
STAGED=""
SUDO=""
FETCHER=""

say() {
  printf 'usepod-agent install: %s\n' "$*"
}

warn() {
  printf 'usepod-agent install: warning: %s\n' "$*" >&2
}

die() {
  printf 'usepod-agent install: error: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  if [ -n "$STAGED" ] && [ -e "$STAGED" ]; then
    $SUDO rm -f "$STAGED" || true
  fi
  if [ -n "$TMP_DIR" ] && [ -d "$TMP_DIR" ]; then
    rm -rf "$TMP_DIR" || true
  fi
}

# Prints the asset name for this machine, e.g. usepod-agent-linux-x64, or exits with a clear error.
detect_asset() {
  os_name=$(uname -s) || die "could not run uname -s"
  arch_name=$(uname -m) || die "could not run uname -m"
  case "$os_name" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    MINGW* | MSYS* | CYGWIN* | Windows*)
      die "Windows is installed with install.ps1: irm https://usepod.ai/install.ps1 | iex" ;;
    *) die "unsupported operating system: $os_name (usepod-agent is built for Linux and macOS)" ;;
  esac
  case "$arch_name" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unsupported CPU architecture: $arch_name on $os_name (usepod-agent is built for x86_64 and arm64)" ;;
  esac
  # A shell under Rosetta reports x86_64 on Apple silicon; the native build is the better choice.
  if [ "$os" = darwin ] && [ "$arch" = x64 ] &&
    [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || true)" = 1 ]; then
    arch=arm64
  fi
  printf 'usepod-agent-%s-%s\n' "$os" "$arch"
}

# Sets FETCHER to curl or wget, whichever is installed (curl first).
pick_fetcher() {
  if command -v curl >/dev/null 2>&1; then
    FETCHER=curl
  elif command -v wget >/dev/null 2>&1; then
    FETCHER=wget
  else
    die "neither curl nor wget is installed; install one of them and run this again"
  fi
}

# download URL FILE: fetches URL into FILE; non-zero on any failure, HTTP errors included.
download() {
  if [ "$FETCHER" = curl ]; then
    curl -fsSL --retry 2 -o "$2" "$1"
  else
    wget -q -O "$2" "$1"
  fi
}

# check_tag TAG: a tag is placed in URLs, so it may hold only letters, digits, dot, dash and underscore.
check_tag() {
  case "$1" in
    "" | *[!A-Za-z0-9._-]*) return 1 ;;
    *) return 0 ;;
  esac
}

# Prints the release tag to install: the pin, else the latest pointer, else the built-in fallback.
resolve_version() {
  if [ -n "${USEPOD_VERSION:-}" ]; then
    case "$USEPOD_VERSION" in
      v*) tag=$USEPOD_VERSION ;;
      *) tag="v$USEPOD_VERSION" ;;
    esac
    check_tag "$tag" || die "USEPOD_VERSION is not a release tag: $USEPOD_VERSION"
    printf '%s\n' "$tag"
    return 0
  fi
  pointer_url="$BASE_URL/agent-latest"
  if download "$pointer_url" "$TMP_DIR/agent-latest" 2>/dev/null; then
    tag=$(head -n 1 "$TMP_DIR/agent-latest" | tr -d ' \t\r\n')
    if check_tag "$tag"; then
      printf '%s\n' "$tag"
      return 0
    fi
    warn "$pointer_url does not hold a release tag; installing built-in $FALLBACK_VERSION"
  else
    warn "could not read $pointer_url; installing built-in $FALLBACK_VERSION"
  fi
  printf '%s\n' "$FALLBACK_VERSION"
}

# Prints the SHA-256 of FILE in lower-case hex with sha256sum or shasum.
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sum_line=$(sha256sum "$1") || return 1
  elif command -v shasum >/dev/null 2>&1; then
    sum_line=$(shasum -a 256 "$1") || return 1
  else
    die "neither sha256sum nor shasum is installed; cannot verify the download"
  fi
  printf '%s\n' "${sum_line%% *}" | tr 'A-F' 'a-f'
}

# Succeeds when DIR is writable or can be created; exits when part of the path is not a directory.
can_write_dir() {
  dir=$1
  while [ ! -d "$dir" ]; do
    if [ -e "$dir" ]; then
      die "$dir exists and is not a directory; set USEPOD_PREFIX to another prefix"
    fi
    dir=$(dirname "$dir")
  done
  [ -w "$dir" ]
}

main() {
  BASE_URL=${USEPOD_BASE_URL:-https://usepod.ai}
  BASE_URL=${BASE_URL%/}
  REPO=${USEPOD_REPO:-https://github.com/usepod/usepod-agent/releases/download}
  REPO=${REPO%/}
  PREFIX=${USEPOD_PREFIX:-/usr/local}
  BIN_DIR="${PREFIX%/}/bin"
  TARGET="$BIN_DIR/usepod-agent"

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  asset=$(detect_asset) || exit 1
  pick_fetcher
  TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/usepod-agent.XXXXXX") || die "could not create a temporary directory"
  tag=$(resolve_version) || exit 1

  url="$REPO/$tag/$asset"
  say "downloading $asset $tag from $url"
  download "$url" "$TMP_DIR/$asset" ||
    die "download failed: $url (is $tag a published release with an asset for this platform?)"
  download "$url.sha256" "$TMP_DIR/$asset.sha256" || die "download failed: $url.sha256"

  # The .sha256 file is in `sha256sum -c` format: "<hex>  <asset name>".
  sum_line=$(head -n 1 "$TMP_DIR/$asset.sha256")
  expected=$(printf '%s\n' "${sum_line%% *}" | tr 'A-F' 'a-f')
  case "$expected" in
    *[!0-9a-f]*) die "$url.sha256 is not a SHA-256 checksum file" ;;
  esac
  [ ${#expected} -eq 64 ] || die "$url.sha256 is not a SHA-256 checksum file"
  actual=$(sha256_of "$TMP_DIR/$asset") || die "could not compute the checksum of $asset"
  if [ "$actual" != "$expected" ]; then
    die "checksum mismatch for $asset $tag: expected $expected, got $actual; nothing was installed"
  fi
  say "checksum verified ($actual)"

  if [ -d "$TARGET" ]; then
    die "$TARGET is a directory; remove it or set USEPOD_PREFIX"
  fi
  if ! can_write_dir "$BIN_DIR"; then
    command -v sudo >/dev/null 2>&1 ||
      die "$BIN_DIR is not writable and sudo is not available; run as a user who can write there, or set USEPOD_PREFIX to a prefix you own (e.g. USEPOD_PREFIX=\$HOME/.local)"
    say "$BIN_DIR is not writable; using sudo"
    SUDO=sudo
  fi

  $SUDO mkdir -p "$BIN_DIR" || die "could not create $BIN_DIR"
  # Write beside the target and rename over it: the old binary stays whole until the new one is in place.
  STAGED="$BIN_DIR/.usepod-agent.tmp.$$"
  $SUDO cp "$TMP_DIR/$asset" "$STAGED" || die "could not write $STAGED"
  $SUDO chmod 755 "$STAGED" || die "could not make $STAGED executable"
  $SUDO mv -f "$STAGED" "$TARGET" || die "could not move the new binary into place at $TARGET"
  STAGED=""
  say "installed usepod-agent $tag to $TARGET"

  if version_line=$("$TARGET" version 2>/dev/null); then
    say "$version_line"
  else
    warn "$TARGET was installed but \`$TARGET version\` failed; check that it matches this machine"
  fi
  case ":${PATH:-}:" in
    *":$BIN_DIR:"*) cmd=usepod-agent ;;
    *)
      warn "$BIN_DIR is not on your PATH; add it, or run $TARGET by its full path"
      cmd=$TARGET
      ;;
  esac

  cat <<EOF

Next steps:
  1. $cmd setup
       writes a config and an identity key for this machine
  2. $cmd --config /path/to/agent.toml
       starts the agent with that config
  3. open http://127.0.0.1:9090/status
       shows the agent's status, backends and jobs
EOF
}

main "$@"

# Shared by install.sh and install-macos.sh: options and a dry-run aware `run`.
# Sets: binary (path or empty), mode, dry (non-empty for --dry-run).
binary=""
dry=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
run() { if [ -n "$dry" ]; then echo "would run: $*"; else "$@"; fi; }

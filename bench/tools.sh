# Sourced by the bench scripts: installs the Debian packages of the tools named, when
# missing (borg is borgbackup, time is /usr/bin/time).
ensure_tools() {
  local missing=() t
  for t in "$@"; do
    case "$t" in
      borg) command -v borg >/dev/null 2>&1 || missing+=(borgbackup) ;;
      time) [ -x /usr/bin/time ] || missing+=(time) ;;
      *) command -v "$t" >/dev/null 2>&1 || missing+=("$t") ;;
    esac
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

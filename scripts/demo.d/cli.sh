# shellcheck shell=bash
# Helpers of scripts/demo (sourced; needs $V, the venv). Every call that changes the cloud goes through
# zstack-cli and is echoed as ">>> zstack-cli ..." on stderr, so the operator sees the exact commands.

say() { printf '\n\033[1m==> %s\033[0m  [%ss]\n' "$*" "$SECONDS" >&2; }

# zstack-cli, echoed (a value with blanks in single quotes, as typed); its JSON reply on stdout. A failed
# API exits non-zero (and so stops the demo).
cli() {
  local a line=">>> zstack-cli"
  for a in "$@"; do
    case $a in *[[:space:]]*) a="${a%%=*}='${a#*=}'" ;; esac
    line+=" $a"
  done
  echo "$line" >&2
  zstack-cli "$@"
}

# jget PATH: from the JSON on stdin print the value at PATH (dots; list indexes are numbers, e.g.
# inventories.0.uuid). A missing key or index prints nothing; lists and objects print as JSON.
jget() {
  "$V/bin/python" -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    if isinstance(d, list) and k.isdigit() and int(k) < len(d):
        d = d[int(k)]
    elif isinstance(d, dict) and k in d:
        d = d[k]
    else:
        sys.exit(0)
print(json.dumps(d) if isinstance(d, (list, dict)) else d)' "$1"
}

# first QueryApi [conditions...]: uuid of the first match, nothing when none (not echoed: it only reads).
first() { local q=$1; shift; zstack-cli "$q" "$@" fields=uuid | jget inventories.0.uuid; }

# uuids QueryApi [conditions...]: the uuids of all matches, one a line.
uuids() {
  local q=$1; shift
  zstack-cli "$q" "$@" fields=uuid | "$V/bin/python" -c '
import json, sys
for inv in json.load(sys.stdin)["inventories"]:
    print(inv["uuid"])'
}

# value QueryApi uuid FIELD: one primitive field of one resource.
value() { zstack-cli "$1" uuid="$2" fields="$3" | jget "inventories.0.$3"; }

# ensure QueryApi NAME CreateApi [args...]: the uuid of the resource called NAME, created with
# `CreateApi name=NAME args...` when no such resource exists.
ensure() {
  local q=$1 name=$2 create=$3 uuid; shift 3
  uuid=$(first "$q" name="$name")
  if [ -z "$uuid" ]; then
    uuid=$(cli "$create" name="$name" "$@" | jget inventory.uuid)
    [ -n "$uuid" ] || { echo "demo: $create name=$name returned no uuid" >&2; return 1; }
  else
    echo "    (reusing $q name=$name: $uuid)" >&2
  fi
  echo "$uuid"
}

# found QueryApi [conditions...]: true when the query matches something (for rows without a uuid too).
found() { [ -n "$(zstack-cli "$@" limit=1 | jget inventories.0)" ]; }

# attach_once "QueryApi cond..." AttachApi args...: run AttachApi unless the query already finds a match.
attach_once() {
  local query=$1; shift
  # shellcheck disable=SC2086 # the query is a list of words on purpose
  if found $query; then
    echo "    (already done: $1)" >&2
  else
    cli "$@" >/dev/null
  fi
}

# wait_vm_state UUID STATE SECONDS: poll QueryVmInstance until the VM is in STATE; fail with its state.
wait_vm_state() {
  local uuid=$1 want=$2 deadline=$((SECONDS + $3)) state
  while :; do
    state=$(value QueryVmInstance "$uuid" state)
    [ "$state" = "$want" ] && return 0
    if [ $SECONDS -ge "$deadline" ]; then
      echo "demo: VM $uuid is $state, not $want, after $3 s" >&2
      return 1
    fi
    sleep 1
  done
}

# shellcheck shell=bash
# Helpers shared by the launchers (sourced, not run): refusing bad input before it is used, and the stamp file that
# records what defined a folder's contents, so nothing made with another seed or config is ever reused.
# The sourcing script defines usage_line() (one line, printed with every error).

# die MESSAGE [MORE LINES...]: the error on stderr, then the usage line; exit status 2.
die() {
  printf 'error: %s\n' "$1" >&2
  [[ $# -lt 2 ]] || printf '%s\n' "${@:2}" >&2
  usage_line >&2
  exit 2
}

# require_int NAME MIN EXAMPLE: the variable NAME holds a whole number >= MIN (0 or 1). Checked as text, before any
# arithmetic: bash evaluates `[[ $x -gt 1 ]]` and `$((x))` as expressions, so a value such as 'PATH[$(cmd)]' runs cmd.
require_int() {
  local value=${!1}
  if [[ ! "$value" =~ ^[0-9]{1,9}$ ]] || ((10#$value < $2)); then
    local kind="a whole number >= $2"
    [[ "$2" == 1 ]] && kind="a positive whole number"
    die "$1='$value' must be $kind, e.g. $1=$3"
  fi
  printf -v "$1" '%d' "$((10#$value))" # drop leading zeros: 08 is not octal here
}

# require_choice NAME CHOICE...: the variable NAME holds one of the choices.
require_choice() {
  local value=${!1} choice
  for choice in "${@:2}"; do [[ "$value" == "$choice" ]] && return 0; done
  die "$1='$value' must be one of: ${*:2}"
}

# require_overrides REFUSED ARG...: the arguments are recipe overrides (--flag [value...]). REFUSED holds one
# "flag: why, and what to use instead" line per option the launcher sets itself.
require_overrides() {
  local refused=$1 arg name flag why
  shift
  if [[ $# -gt 0 && "$1" != -* ]]; then
    die "unexpected argument '$1': overrides are options such as --max_steps 10"
  fi
  for arg in "$@"; do
    [[ "$arg" == --* ]] || continue
    name=${arg#--}
    name=${name%%=*}
    name=${name//-/_}
    while IFS=: read -r flag why; do
      [[ "$name" == "$flag" ]] && die "--$name is set by this launcher:$why"
    done <<<"$refused"
  done
  return 0
}

# quoted ARG...: the arguments as one line a shell would read back the same, "(none)" for none.
quoted() {
  local line="(none) "
  [[ $# -eq 0 ]] || printf -v line '%q ' "$@"
  printf '%s\n' "${line% }"
}

# config_value FILE KEY: a top-level scalar of a flat YAML config (the launchers need a few of them).
config_value() { sed -n "s/^$2: *\([^ #]*\).*/\1/p" "$1" | head -n 1; }

# file_hash FILE: a content hash, so that editing a config is noticed.
file_hash() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

# A stamp is a text file of "key=value" lines (values printed with %q, so one line each).
# stamp_value FILE KEY: print the value stored under KEY; status 1 if FILE has no such key.
stamp_value() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" == "$2="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"$1"
  return 1
}

# stamp_diff FILE LINE...: one "  key: <stored> there, <current> now" line per key stored with another value.
stamp_diff() {
  local file=$1 line old
  shift
  for line in "$@"; do
    if old=$(stamp_value "$file" "${line%%=*}") && [[ "$old" != "${line#*=}" ]]; then
      printf '  %s: %s there, %s now\n' "${line%%=*}" "$old" "${line#*=}"
    fi
  done
}

# stamp_write FILE HEADER LINE...: replace FILE (atomically, and only when it changes) with the given lines, keeping
# the stored lines of keys not given (e.g. experiments of an earlier invocation of the same suite).
stamp_write() {
  local file=$1 header=$2 line key kept
  shift 2
  local tmp="$file.tmp.$$"
  {
    printf '# %s\n' "$header"
    if [[ -f "$file" ]]; then
      while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" == *=* && "$line" != \#* ]] || continue
        kept=1
        for key in "$@"; do [[ "${line%%=*}" == "${key%%=*}" ]] && kept=0; done
        [[ "$kept" == 0 ]] || printf '%s\n' "$line"
      done <"$file"
    fi
    printf '%s\n' "$@"
  } >"$tmp"
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv -f "$tmp" "$file"; fi # a rerun leaves it untouched
}

# is_empty_dir DIR: DIR does not exist or holds nothing.
is_empty_dir() { [[ ! -e "$1" || -z "$(ls -A "$1")" ]]; }

# finished RUN_DIR: a recipe saved its final model there (full weights or a LoRA adapter).
finished() {
  [[ -f "$1/config.json" ]] && compgen -G "$1/model*.safetensors*" >/dev/null && return 0
  [[ -f "$1/config.json" ]] && compgen -G "$1/pytorch_model*.bin*" >/dev/null && return 0
  [[ -f "$1/adapter_config.json" ]] && [[ -f "$1/adapter_model.safetensors" ]]
}

# step TEXT: a visible stage heading.
step() { printf '\n== %s\n' "$*"; }
# run CMD...: run it, or with DRY_RUN=1 print it (quoted, copy-pastable) instead.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}
# have PATH: PATH exists and is kept (a dry run of FRESH=1 only prints the deletions, so it must not count them).
have() { [[ -e "$1" && ! ("${FRESH:-0}" == 1 && "${DRY_RUN:-0}" == 1) ]]; }

# shellcheck shell=bash
# Helpers shared by the launchers (sourced, not run): refusing bad input before it is used, and the provenance record
# (recipes/shared/provenance.py) of what made a folder's files, so nothing made with other settings is ever reused.
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

# override_value NAME ARG...: the last value given to --NAME (also --NAME=VALUE, dashes for underscores) in ARG...
override_value() {
  local name=$1 arg flag value="" take=0
  for arg in "${@:2}"; do
    if [[ "$take" == 1 ]]; then
      value=$arg take=0
      continue
    fi
    flag=${arg%%=*}
    [[ "${flag//-/_}" == "__$name" ]] || continue
    if [[ "$arg" == *=* ]]; then value=${arg#*=}; else take=1; fi
  done
  printf '%s\n' "$value"
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

# --- what made OUT's files: recipes/shared/provenance.py, the one record (OUT/provenance.json) ------------------------------
# An entry per launcher (".") or per experiment, with the settings that define it and the paths the launcher created
# (`own`): the only paths FRESH=1 ever deletes. PYTHON must be set.

provenance() { "$PYTHON" -m recipes.shared.provenance "$@"; }

# check_entry FOLDER NAME KIND START_OVER PRODUCTS DEFINE...: refuse to use FOLDER for entry NAME unless its record
# says the same settings made it (or nothing is there yet). PRODUCTS (space-separated top-level names) must not exist
# unless the record owns them. Sets ENTRY_STATE (empty|same|different: FRESH=1 only, deleted later by fresh_delete).
check_entry() {
  local folder=$1 name=$2 kind=$3 start_over=$4 products=$5 define line state text unowned=" "
  local args=(inspect "$folder" --name "$name" --kind "$kind" --unowned)
  for define in "${@:6}"; do args+=(--define "$define"); done
  text=$(provenance "${args[@]}" 2>&1) || die "${text#error: }"
  state=${text%%$'\n'*}
  state=${state%% *}
  local details=()
  while IFS= read -r line; do
    if [[ "$line" == "  unowned: "* ]]; then unowned+="${line#  unowned: } "; else details+=("$line"); fi
  done < <(tail -n +2 <<<"$text")
  if [[ "$state" == foreign ]]; then
    local names=${unowned# }
    names=${names% }
    die "$folder is not empty and has no provenance.json saying what made its files (${names// /, }): they are not \
this launcher's, and nothing there is reused or deleted. Choose another folder: OUT=<new folder>"
  fi
  if [[ "$state" == different && "${details[0]}" == "  kind: "* ]]; then
    die "$folder holds another program's outputs (${details[0]#  }): choose another folder: OUT=<new folder>"
  fi
  if [[ "$state" == different && "${FRESH:-0}" != 1 ]]; then
    die "$folder was made with other settings:" "${details[@]}" "$start_over"
  fi
  for line in $products; do
    [[ "$unowned" != *" $line "* ]] ||
      die "$folder/$line exists but $folder/provenance.json has no record of it (not made by this launcher): \
move it away or choose another folder: OUT=<new folder>"
  done
  # shellcheck disable=SC2034  # read by the sourcing launcher
  ENTRY_STATE=$state
}

# fresh_delete FOLDER INPUT...: FRESH=1, after every check passed: delete exactly the paths the record owns (never an
# input, never a file it does not list); a dry run prints them instead.
fresh_delete() {
  local folder=$1 input text args=(delete "$1" --all)
  for input in "${@:2}"; do [[ -z "$input" ]] || args+=(--input "$input"); done
  [[ "${DRY_RUN:-0}" != 1 ]] || args+=(--dry-run)
  text=$(provenance "${args[@]}" 2>&1) || die "${text#error: }"
  FRESH_DELETED=$text
  local verb=deleted
  [[ "${DRY_RUN:-0}" != 1 ]] || verb="would delete (dry run)"
  [[ -z "$text" ]] || printf 'FRESH=1: %s %s\n' "$verb" "${text//$'\n'/ }"
}

# record_entry FOLDER NAME KIND STATE DEFINE... [-- PATH...]: the entry's settings and state, and (as `own`) the paths
# it is about to create; nothing in a dry run. One Python start for all of it.
record_entry() {
  local item owning=0 args=(record "$1" --name "$2" --kind "$3" --state "$4")
  for item in "${@:5}"; do
    if [[ "$owning" == 1 ]]; then
      [[ -e "$1/$item" ]] || args+=(--owns "$item")
    elif [[ "$item" == -- ]]; then
      owning=1
    else
      args+=(--define "$item")
    fi
  done
  [[ "${DRY_RUN:-0}" == 1 ]] || provenance "${args[@]}"
}

# own FOLDER NAME PATH...: entry NAME owns each PATH (relative to FOLDER) it is about to create; a path that exists
# already is not claimed (it is the entry's from before, or the check above refused it).
own() {
  local folder=$1 name=$2 path args=()
  for path in "${@:3}"; do [[ -e "$folder/$path" ]] || args+=(--owns "$path"); done
  [[ "${DRY_RUN:-0}" == 1 || ${#args[@]} -eq 0 ]] || provenance record "$folder" --name "$name" "${args[@]}"
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

# --- quiet stages: the whole output of each in LOGS/<name>.log, one line of account on the console -----------------
# recipes/shared/stages.py runs them: side by side where they may, the Python stages sharing one import of torch and
# transformers (PRELOAD; W&B and TRL's trainers are never preloaded: see there). STAGES holds the plan; DRY_RUN=1
# prints each command instead.
PRELOAD=torch,torchvision,transformers,datasets,accelerate,deepspeed,peft
STAGES=()
STAGE_NAMES=" "

# add_stage NAME TITLE CMD...: stage NAME runs CMD once the stages named in AFTER (set before the call, among those
# added already; the others are done) have succeeded.
add_stage() {
  local name=$1 title=$2 wait waits=() joined
  shift 2
  for wait in ${AFTER:-}; do [[ "$STAGE_NAMES" != *" $wait "* ]] || waits+=("$wait"); done
  joined=$(IFS=,; echo "${waits[*]}")
  STAGES+=("$name" "$title" "${joined:--}" "$#" "$@")
  STAGE_NAMES+="$name "
  [[ "${DRY_RUN:-0}" != 1 ]] || run "$@"
}

# run_stages: run the stages added (nothing in a dry run); a stage that fails ends this script with its exit status.
run_stages() {
  [[ "${DRY_RUN:-0}" != 1 && ${#STAGES[@]} -gt 0 ]] || return 0
  "$PYTHON" -m recipes.shared.stages --logs "$LOGS" --preload "$PRELOAD" "${STAGES[@]}"
}

# have PATH: PATH exists and is kept (a dry run of FRESH=1 only prints its deletions: those paths do not count).
have() {
  local gone
  [[ -e "$1" ]] || return 1
  [[ "${DRY_RUN:-0}" == 1 ]] || return 0
  while IFS= read -r gone; do
    [[ -z "$gone" || ("$1" != "$gone" && "$1" != "$gone"/*) ]] || return 1
  done <<<"${FRESH_DELETED:-}"
}

#!/usr/bin/env bash
# End-to-end test of the real app in a real terminal (tmux), on the bundled shapes-a model, CPU only:
# start a new session, type a prompt, toggle lanes, save, quit, restart and check that the step
# count, the prompt and the active lane were kept; finally hang up (SIGHUP) and check it saved.
#
#   tests/e2e_tmux.sh                      # uses `clipterm` from PATH
#   CLIPTERM="python -m clipterm" tests/e2e_tmux.sh
#   KEEP=1 tests/e2e_tmux.sh               # keep the work directory for a look afterwards
set -euo pipefail

CLIPTERM=${CLIPTERM:-clipterm}
TIMEOUT=${E2E_TIMEOUT:-90}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/clipterm-e2e.XXXXXX")
SESS="$WORK/e2e"
NAME="clipterm-e2e-$$"
SOCK="clipterm-e2e-$$"  # a private tmux server: our settings never touch anyone else's tmux
tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
ARGS="--model shapes-a --device cpu --judge none --render halfcell --fps 4 --lanes ab"  # two lanes: t flips A and B

cleanup() {
    tm kill-session -t "$NAME" 2>/dev/null || true
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

fail() {
    echo "E2E FAIL: $*" >&2
    echo "---- screen (right half) ----" >&2
    tm capture-pane -p -t "$NAME" -S -60 2>/dev/null | cut -c 81- >&2 || true
    echo "---- screen ----" >&2
    tm capture-pane -p -t "$NAME" -S -60 >&2 2>/dev/null || true
    exit 1
}

screen() { tm capture-pane -p -t "$NAME" -S -60; }

wait_for() {  # wait_for REGEX [what]: poll the screen until REGEX (grep -E) shows up
    local deadline=$((SECONDS + TIMEOUT))
    until screen | grep -Eq -- "$1"; do
        ((SECONDS < deadline)) || fail "timed out waiting for ${2:-$1}"
        sleep 0.2
    done
}

keys() {  # one key (group) at a time, as a person types: a burst could reach a field before its focus does
    tm send-keys -t "$NAME" "$@"
    sleep 0.3
}

RUNS=0
start() {  # start EXTRA_ARGS...: the app in a new 160x48 tmux session; its exit code is echoed after
    RUNS=$((RUNS + 1))
    NAME="clipterm-e2e-$$-$RUNS"  # a new session each time: the server never stops in between
    tm new-session -d -s "$NAME" -x 160 -y 48 \
        "cd '$WORK' && $CLIPTERM '$SESS' $ARGS $*; echo CLIPTERM-EXIT-\$?; sleep 600"
    tm set-option -s escape-time 0  # hand escape to the app at once (the default 500 ms makes esc+t alt+t)
}

session_steps() { sed -n 's/^steps = \([0-9]*\)$/\1/p' "$SESS/session.toml"; }

# 1. a new session, running
start --prompt "'a red circle on a black background'"
wait_for "new session e2e on shapes-a" "the new session"
wait_for "▶ running.*step [1-9]" "steps to run"

# 2. type a prompt; enter applies it (re-encoded, logged)
keys p
wait_for "⏎ Apply" "the prompt field to take the focus"
keys C-u
keys -l "a blue square on a white background"
keys Enter
wait_for "prompt: .* → 'a blue square on a white background'" "the prompt change in the Log"
keys Escape

# 3. toggle lanes: t, ctrl+t, t (ends on lane B)
keys t
wait_for "Frame B · constrained · step" "lane B in the Frame title"
wait_for "Parameters · lane B" "lane B parameters"
keys C-t
wait_for "Frame A · unconstrained · step" "lane A after ctrl+t"
keys t
wait_for "Frame B · constrained" "lane B again"

# 3b. a 21-key burst into the parameter editor while optimizing (one send-keys: the keys arrive
#     together): backspaces, digits and cursor moves must all land, in order
keys Down Enter BSpace BSpace BSpace BSpace BSpace BSpace BSpace BSpace BSpace BSpace 0 . 1 5 Left Left 0 End Enter
wait_for "lane B: lr 0.05 → 0.015" "the burst's value applied to lane B"

# 4. save, then quit (which saves again)
keys C-s
wait_for "saved at step [0-9]+" "the save"
keys q
wait_for "CLIPTERM-EXIT-0" "a clean exit"
saved=$(screen | sed -n 's/^clipterm: saved .* at step \([0-9]*\)$/\1/p' | tail -1)
[[ -n "$saved" ]] || fail "no 'saved ... at step N' line after quitting"
[[ "$(session_steps)" == "$saved" ]] || fail "session.toml has steps $(session_steps), quit said $saved"
grep -q 'prompt = "a blue square on a white background"' "$SESS/session.toml" || fail "prompt not saved"
echo "quit saved step $saved"

# 5. restart: step count, prompt and active lane are kept
start
wait_for "resumed e2e at step $saved on shapes-a" "resume at step $saved"
wait_for "Frame B · constrained" "lane B restored"
screen | grep -q "a blue square on a white background" || fail "prompt not restored"
wait_for "▶ running.*step [0-9]+" "running again"
echo "resumed at step $saved with lane B"

# 6. hang up: the app saves on SIGHUP
sleep 2
tm kill-session -t "$NAME"
for _ in $(seq 1 300); do  # wait until the session lock is free: the app has saved and exited
    if flock -n "$SESS/.lock" true; then break; fi
    sleep 0.2
done
flock -n "$SESS/.lock" true || fail "the app still holds the session lock after SIGHUP"
after=$(session_steps)
((after > saved)) || fail "SIGHUP did not save progress (steps $after, was $saved)"
echo "SIGHUP saved step $after"
echo "E2E OK"

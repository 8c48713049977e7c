#!/usr/bin/env bash
# Fuzzing, Miri and AddressSanitizer for hostsock: the nightly-only part of
# .ci/run (issue 6, parts 5 and 6). Run from the repository root.
#
# Every step needs a nightly toolchain. When `cargo +nightly` is missing the
# whole script says so and exits 0 (stable CI still runs the twins:
# tests/fuzz_twins.rs and tests/security.rs run in the ordinary `cargo test`).
# A crash, a Miri error or an ASan report fails the script.
#
# Knobs (environment):
#   FUZZ_SECONDS   seconds per fuzz target (default 60)
#   FUZZ_TARGETS   space-separated targets (default: all six)
#   SKIP_FUZZ=1, SKIP_MIRI=1, SKIP_ASAN=1   leave a step out
#   CI_END         epoch seconds by which the whole CI run should be done;
#                  a step that would not fit is skipped with a message
#
# Measured on the 2-vCPU machine (shared with other jobs): fuzz build 86 s,
# six targets x 60 s = 6 min; Miri 2 min for the lib unit tests (plus
# ~2 min for its sysroot the first time) and 3.4 min for the pure corpus
# replays; ASan cold build 5 min, the whole test suite under it 113 s.
# Total about 20 min.
set -uo pipefail

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
read -r -a TARGETS <<<"${FUZZ_TARGETS:-sockaddr cmsg_recv cmsg_send sockopt flags opseq}"
status=0

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-ci: skipped: no nightly toolchain (cargo +nightly --version failed);" \
        "cargo-fuzz, Miri and -Zsanitizer need nightly. The stable twins" \
        "(tests/fuzz_twins.rs) ran in cargo test."
    exit 0
fi
echo "fuzz-ci: $(cargo +nightly --version)"

step() { echo; echo "=== fuzz-ci: $* ($(date -u +%H:%M:%S))"; }

# fits MINUTES: is there time left for a step of about MINUTES minutes?
fits() {
    [ -z "${CI_END:-}" ] && return 0
    local left=$(( CI_END - $(date +%s) ))
    if [ "$left" -lt $(( $1 * 60 )) ]; then
        echo "fuzz-ci: skipped (CI time budget): $2 needs about $1 min, $(( left / 60 )) min left"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------- fuzzing
if [ "${SKIP_FUZZ:-0}" != 1 ] && fits $(( ${#TARGETS[@]} * FUZZ_SECONDS / 60 + 4 )) "fuzzing"; then
    step "cargo-fuzz, ${FUZZ_SECONDS}s per target"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        # Cached in ~/.cargo/bin once installed.
        # A tool that cannot be installed here is a skip, not a failure
        # of the code under test.
        cargo install --locked cargo-fuzz || \
            echo "fuzz-ci: fuzzing skipped: cargo install cargo-fuzz failed"
    fi
    if cargo fuzz --version >/dev/null 2>&1; then
        # -timeout=10: an input running 10 s is a hang (a spin in a wait);
        # libFuzzer reports it as a crash with the input.
        # The socket targets move themselves into a private network
        # namespace when root (unshare(CLONE_NEWNET)); without root they
        # keep every address on loopback.
        if ! (cd fuzz && cargo +nightly fuzz build -O); then
            echo "fuzz-ci: FAIL: fuzz build"
            status=1
        else
            for t in "${TARGETS[@]}"; do
                step "fuzz $t"
                log="$(mktemp)"
                (cd fuzz && cargo +nightly fuzz run -O "$t" -- \
                    -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1) >"$log" 2>&1
                rc=$?
                grep -E '^Done|stat::number_of_executed_units|stat::average_exec_per_sec' "$log"
                if [ $rc -ne 0 ]; then
                    echo "fuzz-ci: FAIL: fuzz target $t crashed (rc $rc):"
                    if grep -qE 'panicked|ERROR: |deadly signal' "$log"; then
                        grep -E -A12 'panicked|ERROR: |deadly signal' "$log" | head -40
                    else
                        tail -30 "$log"
                    fi
                    grep -E 'Test unit written to|cargo fuzz tmin' "$log" | head -3
                    status=1
                fi
                rm -f "$log"
            done
        fi
    fi
fi

# ---------------------------------------------------------------- miri
if [ "${SKIP_MIRI:-0}" != 1 ] && fits 5 "miri"; then
    step "miri on the pure code (codecs, policy, address rules)"
    if ! cargo +nightly miri --version >/dev/null 2>&1; then
        # rustup may be able to fetch it; if not, say so and go on.
        rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
    fi
    if cargo +nightly miri --version >/dev/null 2>&1; then
        # Unit tests of the pure modules, and the pure fuzz twins over the
        # checked-in corpus (no sockets: Miri has no socket shims).
        if ! cargo +nightly miri test --lib -- cmsg:: policy:: raw::sockaddr raw::errno; then
            echo "fuzz-ci: FAIL: miri (lib)"
            status=1
        fi
        if fits 4 "miri over the corpus replays" && ! MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-isolation" cargo +nightly miri test \
            --test fuzz_twins -- corpus_cmsg_recv corpus_pure_decoders; then
            echo "fuzz-ci: FAIL: miri (pure corpus replays)"
            status=1
        fi
    else
        echo "fuzz-ci: miri skipped: the nightly toolchain has no miri component" \
            "and rustup could not add it"
    fi
fi

# ---------------------------------------------------------------- asan
if [ "${SKIP_ASAN:-0}" != 1 ] && fits 8 "ASan/LSan"; then
    step "AddressSanitizer + LeakSanitizer over the library and integration tests"
    # Two tests fork children that run with no fd left (the EMFILE flood)
    # or are torn down mid-stream (the reset fault): LeakSanitizer's exit
    # check hits a fatal error in those children ("LeakSanitizer has
    # encountered a fatal error"), not a leak. They run in a second pass
    # with ASan only (detect_leaks=0); everything else runs with LSan.
    LSAN_UNFIT=(incoming_under_an_emfile_flood_backs_off_and_recovers
        reset_mid_stream_gives_econnreset_and_no_sigpipe)
    skips=()
    for t in "${LSAN_UNFIT[@]}"; do skips+=(--skip "$t"); done
    asan() {
        RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
            CARGO_TARGET_DIR="${ASAN_TARGET_DIR:-target/asan}" \
            cargo +nightly test --target x86_64-unknown-linux-gnu --no-fail-fast "$@"
    }
    log="$(mktemp)"
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" asan --lib --tests -- "${skips[@]}" >"$log" 2>&1
    rc1=$?
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" asan --test emfile_flood --test faults \
        -- "${LSAN_UNFIT[@]}" >>"$log" 2>&1
    rc2=$?
    grep -E '^test result|^     Running' "$log" | paste - - | awk '{print $2, $(NF-14), $(NF-13), $(NF-12), $(NF-11)}' || true
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|Sanitizer has encountered' "$log"; then
        echo "fuzz-ci: FAIL: a sanitizer report:"
        grep -E -B2 -A25 'ERROR: (AddressSanitizer|LeakSanitizer)|Sanitizer has encountered' "$log" | head -80
        status=1
    elif [ $rc1 -ne 0 ] || [ $rc2 -ne 0 ]; then
        echo "fuzz-ci: FAIL: tests fail under ASan (no sanitizer report):"
        grep -E '^    [a-z_0-9:]+$|^error: ' "$log" | head -40
        status=1
    else
        echo "fuzz-ci: asan: clean"
    fi
    rm -f "$log"
fi

exit $status

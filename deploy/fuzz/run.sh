#!/usr/bin/env bash
# make fuzz: cargo-fuzz (libFuzzer, AddressSanitizer) on the platform's decoders, each
# target for a bounded time (crates/fuzz):
#   decode_event_envelope    the event envelope of `orders`
#   decode_command_envelope  the command envelope of `order-commands`, the stats record
#   http_bodies              the command API's JSON bodies: depth check, JSON, validation
# Installs what it needs on first use: the nightly toolchain (rustup, minimal profile)
# and cargo-fuzz (from crates.io, into ~/.cache/orders-platform/tools). The corpus of
# each target is kept in .local/fuzz/<target>/corpus (a later run starts from it); a
# crash stops the run with the input that caused it in .local/fuzz/<target>/artifacts.
# Settings: FUZZ_SECONDS (per target, default 60), FUZZ_TARGETS (default: all three).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ORDERS_LOCAL_DIR:-$ROOT/.local}/fuzz
TOOLS=$HOME/.cache/orders-platform/tools
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=(${FUZZ_TARGETS:-decode_event_envelope decode_command_envelope http_bodies})
CARGO_FUZZ_VERSION=0.13.2

log() { printf '[fuzz] %s\n' "$*"; }
die() {
  printf '[fuzz] ERROR: %s\n' "$*" >&2
  exit 1
}

command -v rustup >/dev/null || die "rustup is missing: install Rust with rustup (https://rustup.rs)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (libFuzzer's sanitizers need it)"
  rustup toolchain install nightly --profile minimal >/dev/null
fi
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH=$TOOLS/bin:$PATH
# Apart from the workspace's build cache: other flags (sanitizers, coverage) and toolchain.
export CARGO_TARGET_DIR=$HOME/.cache/orders-platform/fuzz-target

cd "$ROOT"
for target in "${TARGETS[@]}"; do
  mkdir -p "$STATE/$target/corpus"
  # This run's crashes only (an earlier run's would be taken for this one's).
  rm -rf "$STATE/$target/artifacts" && mkdir -p "$STATE/$target/artifacts"
  log "$target for ${SECONDS_EACH}s (corpus $STATE/$target/corpus)"
  if ! cargo +nightly fuzz run --fuzz-dir crates/fuzz "$target" "$STATE/$target/corpus" -- \
    -max_total_time="$SECONDS_EACH" -artifact_prefix="$STATE/$target/artifacts/" -print_final_stats=1 \
    >"$STATE/$target/run.log" 2>&1; then
    tail -n 40 "$STATE/$target/run.log" >&2
    if [ -n "$(ls -A "$STATE/$target/artifacts")" ]; then
      die "$target found a crash; the input is in $STATE/$target/artifacts"
    fi
    die "cargo fuzz failed on $target; see $STATE/$target/run.log"
  fi
  log "$target: $(grep -E '^stat::number_of_executed_units' "$STATE/$target/run.log" | awk '{print $2}') inputs, no crash"
done
log "passed: ${#TARGETS[@]} targets, ${SECONDS_EACH}s each, no crash"

#!/usr/bin/env bash
# The one place that decides where cargo builds this project: $CARGO_TARGET_DIR when
# set, else a cache outside the clone (so fresh clones reuse earlier builds). The
# Makefile, services.sh and demo.sh all ask this script.
printf '%s\n' "${CARGO_TARGET_DIR:-$HOME/.cache/orders-platform/target}"

#!/usr/bin/env bash
# Every example in a command's --help whose inputs are in the repository runs as printed (from a
# folder that sees the repository's models/, data/ and tests/, writing under out/), in the order
# of the commands below, so that an example may read what an earlier one wrote under out/.
# Examples that name files a user brings (prompts.txt, clean.jsonl, ...) or that no example
# before them wrote, elide options (...) or need MPI are illustrations, counted as skipped.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/lib.sh
ROOT=$PWD
case $SUBSCOPE in /*) ;; *) SUBSCOPE=$ROOT/$SUBSCOPE ;; esac
W=$TMP/w
mkdir -p "$W/out"
for d in models data tests; do ln -s "$ROOT/$d" "$W/$d"; done
skipped=0
for c in info tokenize predict forward collect attribute discover trace ablate patch report train show; do
    # The example lines, each with its continuation lines ("\" at the end) joined.
    ex=$("$SUBSCOPE" "$c" --help | awk '/^examples?[ :(]/ {f = 1; next} f' | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
    [ -n "$ex" ] || { fail "$c: --help has examples"; continue; }
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | sed 's/^ *//')
        case $line in subscope\ *) ;; *) continue ;; esac
        line=$(printf '%s' "$line" | tr -s ' ')
        missing= prev=
        for w in $line; do
            w=${w//\'/}
            case $w in
            out/*) [ "$prev" = --out ] || [ -e "$W/$w" ] || missing=$w ;; # read, not written: an earlier example's
            *.jsonl | *.json | *.txt | *.h5 | *.gguf) [ -e "$W/$w" ] || missing=$w ;;
            esac
            prev=$w
        done
        if [ -n "$missing" ] || [[ $line == *" ... "* ]]; then
            skipped=$((skipped + 1))
            continue
        fi
        if out=$(cd "$W" && eval "\"\$SUBSCOPE\" ${line#subscope }" 2>&1); then pass "$c --help: $line"
        else fail "$c --help: $line" "$(printf '%s' "$out" | tail -n 3)"; fi
    done <<<"$ex"
done
echo "  ($skipped examples with files a user brings, or elided options, not run)"
finish

#!/usr/bin/env bash
# Every example in a command's --help whose inputs are in the repository runs as printed (from a
# folder that sees the repository's models/, data/ and tests/, writing under out/), in the order
# of the commands below, so that an example may read what an earlier one wrote under out/.
# Examples that name files a user brings (prompts.txt, clean.jsonl, ...) or that no example
# before them wrote, elide options (...) or need MPI are illustrations, counted as skipped.
# Then README's "Examples" block runs the same way in a folder with no out/ (a fresh clone's),
# and each row of README's command table is checked against that command's --help.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/lib.sh
ROOT=$PWD
case $SUBSCOPE in /*) ;; *) SUBSCOPE=$ROOT/$SUBSCOPE ;; esac
W=$TMP/w
mkdir -p "$W/out"
for d in models data tests; do ln -s "$ROOT/$d" "$W/$d"; done
skipped=0
# run_examples LABEL DIR: runs the example lines on stdin (continuations joined; a trailing
# "  # comment" dropped) that start with "subscope " (or "bin/subscope ", or are a mkdir), in DIR.
run_examples() {
    local label=$1 dir=$2 line cmd missing prev w out
    while IFS= read -r line; do
        line=$(printf '%s' "$line" | sed -e 's/^ *//' -e 's/ \{1,\}# .*$//' -e 's|^bin/subscope |subscope |')
        case $line in subscope\ * | mkdir\ *) ;; *) continue ;; esac
        line=$(printf '%s' "$line" | tr -s ' ')
        missing= prev=
        for w in $line; do
            w=${w//\'/}
            case $w in
            out/*) [ "$prev" = --out ] || [ -e "$dir/$w" ] || missing=$w ;; # read, not written: an earlier example's
            *.jsonl | *.json | *.txt | *.h5 | *.gguf) [ -e "$dir/$w" ] || missing=$w ;;
            esac
            prev=$w
        done
        if [ -n "$missing" ] || [[ $line == *" ... "* ]]; then
            skipped=$((skipped + 1))
            continue
        fi
        cmd=$line
        case $line in subscope\ *) cmd="\"\$SUBSCOPE\" ${line#subscope }" ;; esac
        if out=$(cd "$dir" && eval "$cmd" 2>&1); then pass "$label: $line"
        else fail "$label: $line" "$(printf '%s' "$out" | tail -n 3)"; fi
    done
}
for c in info tokenize predict forward collect attribute discover trace ablate patch report train show; do
    # The example lines, each with its continuation lines ("\" at the end) joined.
    ex=$("$SUBSCOPE" "$c" --help | awk '/^examples?[ :(]/ {f = 1; next} f' | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
    [ -n "$ex" ] || { fail "$c: --help has examples"; continue; }
    run_examples "$c --help" "$W" <<<"$ex"
done

# README's examples, in a folder without out/. train (25 s each here) is left out, and so is
# what reads its output.
W2=$TMP/readme
mkdir -p "$W2"
for d in models data tests; do ln -s "$ROOT/$d" "$W2/$d"; done
ex=$(awk '/^### Examples/ {f = 1; next} f && /^```/ {if (g) exit; g = 1; next} g' README.md |
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -v ' train ')
[ -n "$ex" ] || fail "README has an Examples block"
run_examples README "$W2" <<<"$ex"
# FORMAT.md's "Reading it" reads a README example's output: what it opens is in that file.
rd=$(awk '/^### Reading it/ {f = 1; next} f && /^## / {exit} f' docs/FORMAT.md)
file=$(printf '%s\n' "$rd" | grep -o 'h5py.File("[^"]*")' | head -n 1 | sed 's/.*("\(.*\)")/\1/')
objs=$(printf '%s\n' "$rd" | sed -n 's/.*f\["\([^"]*\)"\].*/\1/p; s/.*group="\([^"]*\)".*/\1/p' | sort -u)
for o in $objs; do
    h5ls "$W2/$file/$o" >/dev/null 2>&1 && pass "FORMAT.md's Reading it: $file has /$o" || fail "FORMAT.md's Reading it: $file has no /$o"
done
[ -n "$objs" ] || fail "FORMAT.md's Reading it names datasets"
# Every attribute in the files README's examples wrote (root, groups, datasets; HDF5's own
# dimension-scale attributes aside) is named in FORMAT.md.
attrs=$(for f in "$W2"/out/*.h5; do h5dump -H "$f" 2>/dev/null | sed -n 's/^ *ATTRIBUTE "\([^"]*\)".*/\1/p'; done |
    sort -u | grep -vxE 'DIMENSION_LIST|REFERENCE_LIST|CLASS|NAME|DIMENSION_LABELS')
missing=
for a in $attrs; do grep -qF "\`$a\`" docs/FORMAT.md || missing="$missing $a"; done
[ "$(wc -w <<<"$attrs")" -gt 40 ] && [ -z "$missing" ] &&
    pass "FORMAT.md names every attribute of README's examples' files ($(wc -w <<<"$attrs"))" ||
    fail "FORMAT.md names every attribute of README's examples' files" "missing:${missing:- (none; only $(wc -w <<<"$attrs") attributes found)}"

# README's command table against --help: every option a row names is in the command's usage
# line; every option of a row or of the usage line is in the options list, with the same
# metavar where one in capitals is given (DIR, STATS.h5, N,..).
while IFS= read -r row; do
    spec=${row#'| `'}
    spec=${spec%%'` |'*}
    c=$(printf '%s' "$spec" | awk '{print $2}')
    help=$("$SUBSCOPE" "$c" --help 2>&1)
    usage=$(printf '%s\n' "$help" | sed '/^options:/,$d')
    opts=$(printf '%s\n' "$help" | sed -n '/^options:/,/^$/p')
    bad=
    for src in row usage; do
        text=$spec
        [ $src = usage ] && text=$usage
        while read -r o m; do
            [ -n "$o" ] || continue
            [ $src = row ] && ! grep -qE -- "${o}([] |)]|\$)" <<<"$usage" && bad="$bad; $o is not in the usage line"
            line=$(grep -E -- "^  ${o}( |\$)" <<<"$opts") || { bad="$bad; $o is not in the options"; continue; }
            [ -z "$m" ] || grep -qF -- "  $o $m " <<<"$line " || bad="$bad; $src: $o $m, options: $(awk '{print $1, $2}' <<<"$line")"
        done < <(grep -oE -- '--[a-z][a-z0-9-]*( [A-Z][^] |)`]*)?' <<<"$text")
    done
    [ -z "$bad" ] && pass "README table: $spec" || fail "README table: $spec" "${bad#; }"
done < <(grep '^| `subscope ' README.md)
# The other way round: every option of a command's --help is in README, in the command's table
# row or, for the options several commands share, in a sentence that names the command (such as
# "`collect`, `ablate`, `patch` and `attribute` also take `forward`'s `--max-len T`, ...").
sentences=$(tr '\n' ' ' <README.md | sed 's/\. /.\n/g')
grep -q 'Every command has `--help`' <<<"$sentences" && pass "README: every command has --help" ||
    fail "README says every command has --help"
for c in info tokenize predict forward collect attribute discover trace ablate patch report train show; do
    row=$(grep "^| \`subscope $c " README.md)
    named=$(grep -F -- "\`$c\`" <<<"$sentences")
    missing=
    for o in $("$SUBSCOPE" "$c" --help | sed -n '/^options:/,/^$/p' | grep -oE '^  --[a-z0-9-]+'); do
        [ "$o" = --help ] && continue
        grep -qE -- "${o}([^a-z0-9-]|\$)" <<<"$row" && continue
        grep -qE -- "\`${o}[\` ]" <<<"$named" && continue
        missing="$missing $o"
    done
    [ -z "$missing" ] && pass "README documents every option of $c --help" ||
        fail "README documents every option of $c --help" "not in its row nor in a sentence naming \`$c\`:$missing"
done
# Every option the docs name after a command in one code span (`patch --per neuron --batch 1`,
# `subscope info --config ...`) is an option of that command's --help.
cmds='info|tokenize|predict|forward|collect|attribute|discover|trace|ablate|patch|report|train|show'
bad=
n=0
while IFS= read -r hit; do
    f=${hit%%:*}
    snip=${hit#*:}
    c=$(printf '%s' "$snip" | tr -d '`' | sed -E 's#^(bin/)?subscope ##' | awk '{print $1}')
    for o in $(grep -oE -- '--[a-z][a-z0-9-]*' <<<"$snip"); do
        n=$((n + 1))
        grep -qE -- "^  $o( |\$)" <<<"$("$SUBSCOPE" "$c" --help)" || bad="$bad; $f: $snip: $o"
    done
done < <(grep -oE "\`((bin/)?subscope )?($cmds)( [^\`]*)? --[a-z][^\`]*\`" README.md docs/*.md bench/README.md scripts/slurm/README.md)
[ $n -gt 100 ] && [ -z "$bad" ] && pass "every option the docs name after a command is one of its options ($n)" ||
    fail "every option the docs name after a command is one of its options ($n checked)" "${bad#; }"
# Every SUBSCOPE_* environment variable the program reads (getenv, or the CUDA backend's table of
# 16-bit paths) has a row in README's table of environment variables.
envs=$( (grep -rhoE 'getenv\("SUBSCOPE_[A-Z0-9_]+"' src kernels; grep -rhoE '\{"SUBSCOPE_[A-Z0-9_]+", SS_LOWP16' src) |
    grep -oE 'SUBSCOPE_[A-Z0-9_]+' | sort -u)
[ -n "$envs" ] || fail "the sources read SUBSCOPE_* variables"
missing=
for v in $envs; do grep -qE "^\| [^|]*\`$v\`" README.md || missing="$missing $v"; done
[ -z "$missing" ] && pass "README's environment table has every SUBSCOPE_* variable the sources read" ||
    fail "README's environment table has every SUBSCOPE_* variable the sources read" "missing:$missing"
echo "  ($skipped examples with files a user brings, or elided options, not run)"
finish

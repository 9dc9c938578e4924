#!/usr/bin/env bash
# Outputs that are symbolic links are written through, as a shell's redirection would: the file
# the link names (at the end of a chain; where the last link dangles, a file created there)
# gets the new data and the link stays a link. The temporary goes beside that file and is renamed
# over it: renamed over the link itself, it replaced the link with a regular file and left the
# link's target with the old data. A link to /dev/null or to a folder is refused before the run,
# as the target itself is, and so is a dangling link whose folder is missing, naming both.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
M=models/tiny-gpt2
P=$D/ablate/prompts.jsonl
MK=${TOOLBIN}mkmodel
mkdir -p "$TMP/a" "$TMP/b" "$TMP/dir"

is_hdf5() { [ -f "$1" ] && [ "$(head -c 8 "$1" | od -An -c | tr -d ' ')" = '211HDF\r\n032\n' ]; }
is_st() { [ -f "$1" ] && [ "$(head -c 9 "$1" | tail -c 1)" = '{' ]; } # safetensors: a length, then JSON
# through NAME LINK TARGET WANT: LINK is still the link it was made (mklink), TARGET holds the new
# output (WANT: hdf5, st, or a grep pattern for its first line), and no temporary is left.
through() {
    local n=$1 link=$2 to=$3 want=$4 ok=1
    [ -L "$link" ] && [ "$(readlink "$link")" = "$(cat "$(was "$link")")" ] || ok=0
    case $want in
    hdf5) is_hdf5 "$to" || ok=0 ;;
    st) is_st "$to" || ok=0 ;;
    *) head -n 1 "$to" 2>/dev/null | grep -q -- "$want" || ok=0 ;;
    esac
    ls -A "$(dirname "$to")" "$(dirname "$link")" | grep -q '\.tmp\.' && ok=0
    [ $ok = 1 ] && pass "$n" || fail "$n" "$(ls -l "$link" "$to" 2>&1 | tr '\n' ' ')" "$(head -c 60 "$to" 2>/dev/null | od -c | head -n 2)"
}
# mklink TARGET LINK: ln -s, remembering what the link says (through checks it is unchanged)
mkdir "$TMP/was"
was() { printf '%s/%s' "$TMP/was" "$(printf '%s' "$1" | tr / _)"; }
mklink() { ln -s "$1" "$2" && printf '%s' "$1" >"$(was "$2")"; }

# forward --out: a link to a file, a chain of relative links across folders, a dangling link.
echo old >"$TMP/b/f.h5"
mklink ../b/f.h5 "$TMP/a/l1.h5"      # relative: from the link's own folder
mklink "$TMP/a/l1.h5" "$TMP/chain.h5" # absolute, to the first
fwd() { "$SUBSCOPE" forward --model $M --input $P --out "$@"; }
expect_ok "forward --out a link to a file" fwd "$TMP/a/l1.h5"
through "... the target holds the HDF5 output, the link stays" "$TMP/a/l1.h5" "$TMP/b/f.h5" hdf5
echo old >"$TMP/b/f.h5"
expect_ok "forward --out a chain of two links" fwd "$TMP/chain.h5"
through "... the end of the chain holds the output, both links stay" "$TMP/chain.h5" "$TMP/b/f.h5" hdf5
[ "$(readlink "$TMP/a/l1.h5")" = ../b/f.h5 ] && pass "... the middle link too" || fail "the middle link stays"
mklink b/new.h5 "$TMP/dangling.h5"
expect_ok "forward --out a dangling link" fwd "$TMP/dangling.h5"
through "... the file it names is created" "$TMP/dangling.h5" "$TMP/b/new.h5" hdf5
# refused before the run, the link and what it names left as they were
mklink nodir/x.h5 "$TMP/gone.h5"
expect_fail "a dangling link whose folder is missing is refused, naming the link and its target" \
    "--out $TMP/gone.h5: a symbolic link to $TMP/nodir/x.h5, whose folder $TMP/nodir cannot be used: No such file or directory" \
    fwd "$TMP/gone.h5"
# a dangling link to a name ending in '/' names a folder, not a file: it was "whose folder
# nodir cannot be used" (missing) or "Not a directory" (a file), the slash unmentioned
mklink nodir/ "$TMP/slash.h5"
expect_fail "a dangling link to a name ending in '/' is refused, saying it names a folder" \
    "--out $TMP/slash.h5: a symbolic link to $TMP/nodir/, which ends in '/': it names a folder, not a file" \
    fwd "$TMP/slash.h5"
mklink b/f.h5/ "$TMP/fslash.h5"
expect_fail "... and to a file's name with '/' after it" \
    "--out $TMP/fslash.h5: a symbolic link to $TMP/b/f.h5/, which ends in '/': it names a folder, not a file" \
    fwd "$TMP/fslash.h5"
mklink /dev/null "$TMP/null.h5"
expect_fail "a link to /dev/null is refused" "--out $TMP/null.h5 (a symbolic link to /dev/null) is not a file (a device" fwd "$TMP/null.h5"
[ -c /dev/null ] && [ -L "$TMP/null.h5" ] && pass "... /dev/null is still a device, the link a link" || fail "/dev/null kept"
mklink dir "$TMP/dir.h5"
expect_fail "a link to a folder is refused" "--out $TMP/dir.h5 (a symbolic link to $TMP/dir) is a folder; give a file name" \
    fwd "$TMP/dir.h5"
mklink loop2 "$TMP/loop1"; mklink loop1 "$TMP/loop2"
expect_fail "a loop of links is refused" "more than 40 links (a loop?)" fwd "$TMP/loop1"
[ -L "$TMP/dir.h5" ] && [ -L "$TMP/gone.h5" ] && [ -L "$TMP/slash.h5" ] && [ -L "$TMP/fslash.h5" ] && is_hdf5 "$TMP/b/f.h5" && [ -L "$TMP/null.h5" ] && [ -L "$TMP/loop1" ] && [ -z "$(ls "$TMP/dir")" ] &&
    [ ! -e "$TMP/nodir" ] && pass "... refused runs wrote nothing" ||
    fail "refused runs wrote nothing" "$(ls -l "$TMP" "$TMP/dir")"

# collect --out, and its checkpoint (written as the output is) beside a link
echo old >"$TMP/b/st.h5"
mklink b/st.h5 "$TMP/st.h5"
expect_ok "collect --out a link" "$SUBSCOPE" collect --model $M --input $P --sites 'blocks.*.mlp.hook_post' \
    --stats mean,cov --group-by label --out "$TMP/st.h5"
through "... the target holds the statistics" "$TMP/st.h5" "$TMP/b/st.h5" hdf5
mklink b/st2.h5 "$TMP/st2.h5"
expect_ok "collect --out a dangling link, with checkpoints" "$SUBSCOPE" collect --model $M --input $P --batch 2 \
    --sites blocks.0.mlp.hook_post --checkpoint-every 1 --out "$TMP/st2.h5"
through "... the file it names is created" "$TMP/st2.h5" "$TMP/b/st2.h5" hdf5

# discover --out and --masks-out: both written through
echo old >"$TMP/b/d.h5"; echo old >"$TMP/b/d.jsonl"
mklink b/d.h5 "$TMP/d.h5"; mklink "$TMP/b/d.jsonl" "$TMP/a/m.jsonl"
expect_ok "discover --out and --masks-out links" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' \
    --method cluster --out "$TMP/d.h5" --masks-out "$TMP/a/m.jsonl"
through "... --out's target holds the HDF5 output" "$TMP/d.h5" "$TMP/b/d.h5" hdf5
through "... --masks-out's target holds the masks" "$TMP/a/m.jsonl" "$TMP/b/d.jsonl" '^{"name": "cluster'
mklink b/dm.jsonl "$TMP/dm.jsonl"
expect_ok "discover --masks-out a dangling link" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' \
    --method cluster --out "$TMP/d.h5" --masks-out "$TMP/dm.jsonl"
through "... the file it names is created" "$TMP/dm.jsonl" "$TMP/b/dm.jsonl" '^{"name": "cluster'
expect_fail "discover --masks-out a link to /dev/null is refused" "--masks-out $TMP/null.h5 (a symbolic link to /dev/null) is not a file" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/d.h5" --masks-out "$TMP/null.h5"
expect_fail "discover --out a link to a folder is refused" "--out $TMP/dir.h5 (a symbolic link to $TMP/dir) is a folder" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/dir.h5"

# report --out (an HTML page of its own writer)
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/ab.h5" >/dev/null 2>&1
echo old >"$TMP/b/r.html"
mklink b/r.html "$TMP/r.html"
expect_ok "report --out a link" "$SUBSCOPE" report "$TMP/ab.h5" --out "$TMP/r.html"
through "... the target holds the page" "$TMP/r.html" "$TMP/b/r.html" '^<!DOCTYPE html>'

# train --out DIR: a file there that is a link is written through; DIR a link to a folder is
# written in, a dangling one names the folder to create; a link there to /dev/null, or one whose
# folder is missing, is refused before training
cat >"$TMP/small.json" <<'J'
{"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 16, "vocab_size": 1024}
J
train() { "$SUBSCOPE" train --config "$TMP/small.json" --data $P --tokenizer $M --steps 1 --batch 2 --seq 8 --out "$@"; }
mkdir -p "$TMP/t1"
echo old >"$TMP/b/w.safetensors"
mklink ../b/w.safetensors "$TMP/t1/model.safetensors"
expect_ok "train --out DIR whose model.safetensors is a link" train "$TMP/t1"
through "... its target holds the weights, the link stays" "$TMP/t1/model.safetensors" "$TMP/b/w.safetensors" st
expect_ok "... and forward loads the folder" "$SUBSCOPE" forward --model "$TMP/t1" --input $P --out "$TMP/t1.h5"
mklink t1 "$TMP/t1link"
echo old >"$TMP/b/w.safetensors"
expect_ok "train --out a link to a folder" train "$TMP/t1link"
[ -L "$TMP/t1link" ] && [ -L "$TMP/t1/model.safetensors" ] && is_st "$TMP/b/w.safetensors" && pass "... written in the folder, the link stays" || fail "train into a linked folder"
mklink b/t2 "$TMP/t2"
expect_ok "train --out a dangling link" train "$TMP/t2"
[ -L "$TMP/t2" ] && [ -d "$TMP/b/t2" ] && [ -f "$TMP/b/t2/config.json" ] && pass "... the folder it names is created" ||
    fail "train into a dangling link" "$(ls -l "$TMP/t2" "$TMP/b/t2" 2>&1 | tr '\n' ' ')"
mkdir -p "$TMP/t3"
mklink /dev/null "$TMP/t3/config.json"
expect_fail "train: DIR/config.json a link to /dev/null is refused" "$TMP/t3/config.json is not a file, and train writes config.json there" train "$TMP/t3"
rm "$TMP/t3/config.json"; mklink nodir/c.json "$TMP/t3/config.json"
expect_fail "train: DIR/config.json a dangling link whose folder is missing is refused" \
    "$TMP/t3/config.json: a symbolic link to $TMP/t3/nodir/c.json, whose folder $TMP/t3/nodir cannot be used" train "$TMP/t3"
[ "$(ls "$TMP/t3")" = config.json ] && pass "... before anything was written" || fail "train wrote in $TMP/t3" "$(ls -a "$TMP/t3")"
expect_fail "train --out a link to a file is refused" "exists and is not a directory" train "$TMP/st.h5"

# mkmodel: --out DIR's files and --prompts, as subscope's outputs
mkdir -p "$TMP/mk"
echo old >"$TMP/b/mk.safetensors"; echo old >"$TMP/b/p.jsonl"
mklink ../b/mk.safetensors "$TMP/mk/model.safetensors"; mklink "$TMP/a/l1.h5" "$TMP/p.jsonl"
rm "$TMP/a/l1.h5"; mklink ../b/p.jsonl "$TMP/a/l1.h5" # a chain to b/p.jsonl
expect_ok "mkmodel --out DIR whose model.safetensors is a link, --prompts a chain" \
    "$MK" --out "$TMP/mk" --layers 1 --d 8 --heads 2 --vocab 64 --positions 16 --prompts "$TMP/p.jsonl" --lengths 3,4
through "... the weights' target holds them, the link stays" "$TMP/mk/model.safetensors" "$TMP/b/mk.safetensors" st
through "... the prompts' chain stays and its end holds them" "$TMP/p.jsonl" "$TMP/b/p.jsonl" '^{"tokens": \['
mklink b/mk2 "$TMP/mk2"; mklink b/p2.jsonl "$TMP/p2.jsonl"
expect_ok "mkmodel --out and --prompts dangling links" "$MK" --out "$TMP/mk2" --layers 1 --d 8 --heads 2 --vocab 64 \
    --positions 16 --prompts "$TMP/p2.jsonl" --lengths 3
[ -L "$TMP/mk2" ] && [ -f "$TMP/b/mk2/model.safetensors" ] && pass "... the folder --out names is created" ||
    fail "mkmodel --out dangling" "$(ls -l "$TMP/mk2" "$TMP/b/mk2" 2>&1 | tr '\n' ' ')"
through "... the prompts file is created" "$TMP/p2.jsonl" "$TMP/b/p2.jsonl" '^{"tokens": \['
expect_fail "mkmodel --prompts a link to /dev/null is refused" "cannot write $TMP/null.h5: not a regular file" \
    "$MK" --prompts "$TMP/null.h5" --lengths 3
expect_fail "mkmodel --prompts a link to a folder is refused" "cannot write $TMP/dir.h5: not a regular file" \
    "$MK" --prompts "$TMP/dir.h5" --lengths 3
expect_fail "mkmodel --prompts a dangling link whose folder is missing is refused" \
    "$TMP/gone.h5: a symbolic link to $TMP/nodir/x.h5, whose folder $TMP/nodir cannot be used" "$MK" --prompts "$TMP/gone.h5" --lengths 3
[ -c /dev/null ] && [ -z "$(ls "$TMP/dir")" ] && pass "... /dev/null and the folder as they were" || fail "mkmodel refusals wrote"
finish

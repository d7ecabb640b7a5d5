# Shell functions the qemu guest scripts share (sourced from beside them): each check prints
# "RESULT PASS name" or "RESULT FAIL name: why" on the console for the test to collect.
pass() { echo "RESULT PASS $1"; }
fail() { echo "RESULT FAIL $1: $2"; }
# check NAME EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "want [$2] got [$3]"; fi; }
# check_has NAME NEEDLE HAYSTACK
check_has() { case "$3" in *"$2"*) pass "$1";; *) fail "$1" "[$2] not in [$3]";; esac; }
rd() { cat "$1" 2>&1 | head -1; }

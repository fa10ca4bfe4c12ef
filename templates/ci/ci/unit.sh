# unit: run every tests/test_*.sh; each passes by exiting 0.
failed=0
for test in tests/test_*.sh; do
    if sh "$test"; then echo "PASS $test"; else echo "FAIL $test"; failed=$((failed + 1)); fi
done
[ "$failed" -eq 0 ] || { echo "$failed test(s) failed"; exit 1; }

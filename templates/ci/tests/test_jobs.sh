# Every job script is a readable shell script.
for script in ci/*.sh; do sh -n "$script" || exit 1; done

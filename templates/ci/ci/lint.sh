# lint: no trailing whitespace and no tabs in the flows and libraries.
bad=$(find . -path ./.git -prune -o \( -name '*.flow' -o -name '*.star' \) -type f -print | xargs grep -nE '[[:space:]]+$|	' )
if [ -n "$bad" ]; then
    echo "trailing whitespace or tabs:"
    echo "$bad"
    exit 1
fi
echo "lint: $(find . -path ./.git -prune -o \( -name '*.flow' -o -name '*.star' \) -type f -print | wc -l) files clean"

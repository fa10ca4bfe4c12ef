# The project's layout: the files `flowmetal run` needs are there.
test -f flowmetal.toml && test -f main.flow && test -f lib/pipeline.star

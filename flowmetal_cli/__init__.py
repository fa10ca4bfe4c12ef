"""The `flowmetal` command: bundles, contexts, the grid client, and one module per verb."""

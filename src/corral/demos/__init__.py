"""The demos the `corral` command runs: `corral demo` (the recommender) and `corral supervision`."""

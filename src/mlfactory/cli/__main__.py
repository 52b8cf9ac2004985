"""`python -m mlfactory.cli ...`: the `mlfactory` command (`mlfactory.serving.process` runs it)."""

from mlfactory.cli import main

if __name__ == "__main__":
    main()

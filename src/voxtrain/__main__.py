"""`python -m voxtrain`: the same as the `voxtrain` command."""

from voxtrain.cli import main

# The guard matters: spawned worker processes re-import the main module and must not re-run the CLI.
if __name__ == "__main__":
    main()

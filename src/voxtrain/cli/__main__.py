"""`python -m voxtrain.cli`: the same as the `voxtrain` command."""

from voxtrain.cli import main

if __name__ == "__main__":
    main()

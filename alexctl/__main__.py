"""`python -m alexctl` is the same as the `alexctl` command."""

from alexctl.cli import main

if __name__ == "__main__":
    main()

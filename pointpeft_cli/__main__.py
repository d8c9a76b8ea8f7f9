"""`python -m pointpeft_cli` entry point (also what `torchrun -m pointpeft_cli` runs)."""

from pointpeft_cli.cli.app import main

if __name__ == "__main__":
    main()

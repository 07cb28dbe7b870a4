"""`python -m tnstore ...` is the `tnstore` command; torchrun needs it: `torchrun --nproc-per-node 8 -m tnstore capture ...`."""
from tnstore.cli.app import main

if __name__ == "__main__":
    main()

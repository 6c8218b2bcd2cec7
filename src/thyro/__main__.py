"""``python -m thyro`` (also ``torchrun -m thyro pretrain ...``)."""

from thyro.cli import main

if __name__ == "__main__":
    main()

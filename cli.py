"""Run the refiner-edge command line from a source checkout: `python cli.py --help` (same as `refiner-edge`)."""
from refiner_edge.cli import run

if __name__ == "__main__":
    run()

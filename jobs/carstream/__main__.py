"""`python -m carstream`, and the SparkApplication's mainApplicationFile: the image copies this
file to /opt/carstream/main.py, which spark-submit runs as `main.py stage NAME [flags]`."""

import sys

from carstream.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

import sys

from threads_exporter.cli import main

sys.exit(main())

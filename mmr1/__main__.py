import sys

from mmr1.cli import main

sys.exit(main())

import sys

from depth2img.standalone.cli import main

sys.exit(main())

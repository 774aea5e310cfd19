from __future__ import annotations

from xmr.cli import main

if __name__ == "__main__":
    main()

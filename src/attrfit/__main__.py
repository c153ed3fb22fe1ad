from attrfit.cli import main

raise SystemExit(main())

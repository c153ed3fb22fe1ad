from attrfit.cli.app import main

raise SystemExit(main())

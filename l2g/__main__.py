from l2g.cli import main

raise SystemExit(main())

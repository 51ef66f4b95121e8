from mariofm.cli import main

raise SystemExit(main())

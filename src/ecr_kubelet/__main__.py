from ecr_kubelet.cli import main

raise SystemExit(main())
